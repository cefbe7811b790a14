"""Free / residual partition of the fine clusters (Algorithm 2 of Blend).

A fine cluster is FREE when none of its members is to be forgotten: its whole
image set becomes one condensation target. Every other non-empty cluster is
TOUCHED: its retain members go to the RESIDUAL set (kept as raw images) and
its forget members are dropped. The single test on the cluster's index set
covers both the paper's inter- and intra-cluster indicators. Host-side numpy:
the output sizes depend on the data.
"""

from typing import NamedTuple

import numpy as np
from jax.typing import ArrayLike


class Partition(NamedTuple):
    """Output of :func:`partition`.

    Attributes:
      index: int64 ``[n_free, max_size]``, the member indices of every free
        cluster, row by row in increasing fine-label order; padded slots
        hold 0.
      mask: bool ``[n_free, max_size]``, True on real members.
      cluster: int64 ``[n_free]``, the fine label of each free cluster.
      residual: int64 ``[n_residual]``, sorted retain members of the touched
        clusters.
    """

    index: np.ndarray
    mask: np.ndarray
    cluster: np.ndarray
    residual: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Members per free cluster, int64 ``[n_free]``."""
        return self.mask.sum(axis=1).astype(np.int64)


def check_index_array(name: str, values: ArrayLike, n: int) -> np.ndarray:
    """Unique sorted int64 indices in ``[0, n)``; raises naming ``name``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D index array, got shape {arr.shape}.")
    if arr.size == 0:
        return np.zeros((0,), np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`{name}` must hold integers, got dtype {arr.dtype}.")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(
            f"`{name}` must lie in [0, {n}), got values in [{arr.min()}, {arr.max()}]."
        )
    return np.unique(arr.astype(np.int64))


def partition(fine_labels: ArrayLike, forget_indices: ArrayLike) -> Partition:
    """Splits the fine clusters into free clusters and residual retain images.

    Args:
      fine_labels: int ``[N]`` fine label of every training image (forget
        included), e.g. from :func:`class_kmeans`.
      forget_indices: int ``[n_forget]`` indices into the training set
        (duplicates are ignored; may be empty, then every cluster is free).
        For multi-round unlearning pass the cumulative forget set.

    Returns:
      :class:`Partition`. Every retain index is either residual or a member
      of exactly one free cluster; no forget index appears anywhere. Empty
      fine labels are simply absent.

    Examples:
      >>> from jaxunlearn import condense
      >>> p = condense.partition([0, 0, 1, 1, 1, 2], forget_indices=[2])
      >>> p.cluster.tolist(), p.index.tolist(), p.mask.tolist()
      ([0, 2], [[0, 1], [5, 0]], [[True, True], [True, False]])
      >>> p.residual.tolist()
      [3, 4]
    """
    fine = np.asarray(fine_labels)
    if fine.ndim != 1:
        raise ValueError(f"`fine_labels` must have shape [N], got {fine.shape}.")
    if not np.issubdtype(fine.dtype, np.integer):
        raise TypeError(f"`fine_labels` must hold integers, got dtype {fine.dtype}.")
    if fine.size and fine.min() < 0:
        raise ValueError(f"`fine_labels` must be >= 0, got min {fine.min()}.")
    n = fine.shape[0]
    forget = check_index_array("forget_indices", forget_indices, n)
    is_forget = np.zeros(n, bool)
    is_forget[forget] = True
    clusters, inverse = np.unique(fine, return_inverse=True)
    touched = np.zeros(len(clusters), bool)
    touched[inverse[forget]] = True
    residual = np.flatnonzero(touched[inverse] & ~is_forget).astype(np.int64)

    free_rows = np.flatnonzero(~touched)
    in_free = ~touched[inverse]
    order = np.argsort(inverse, kind="stable")
    order = order[in_free[order]]  # members of free clusters, grouped by cluster
    row_of = np.full(len(clusters), -1, np.int64)
    row_of[free_rows] = np.arange(len(free_rows))
    rows = row_of[inverse[order]]
    sizes = np.bincount(rows, minlength=len(free_rows))
    max_size = int(sizes.max()) if len(free_rows) else 0
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cols = np.arange(len(order)) - starts[rows]
    index = np.zeros((len(free_rows), max_size), np.int64)
    mask = np.zeros((len(free_rows), max_size), bool)
    index[rows, cols] = order
    mask[rows, cols] = True
    return Partition(
        index=index,
        mask=mask,
        cluster=clusters[free_rows].astype(np.int64),
        residual=residual,
    )
