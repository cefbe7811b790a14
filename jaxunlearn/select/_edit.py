"""Choosing and applying deletions."""

import hashlib

import jax.numpy as jnp
import numpy as np

from jaxunlearn.select._checks import concrete


def select_for_removal(scores, budget):
    """Boolean ``[N]`` mask of the ``budget`` highest scores (True = delete).

    Ties go to the lower index. ``budget`` may be traced, so the function
    vmaps over budgets (and, through the scores, over seeds).

    >>> select_for_removal(jnp.array([0.1, 0.9, 0.5, 0.7]), 2).tolist()
    [False, True, False, True]
    """
    scores = jnp.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}.")
    n = scores.shape[0]
    if n == 0:
        raise ValueError("scores is empty: there is nothing to remove from.")
    b = concrete(budget)
    if b is not None and (np.any(b < 0) or np.any(b > n)):
        raise ValueError(f"budget must be in [0, {n}], got {b}.")
    order = jnp.argsort(-scores, stable=True)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return rank < budget


def budget_from_fraction(fraction, num: int) -> int:
    """``fraction * num`` rounded half up, the fraction checked to lie in [0, 1]."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    return int(np.floor(float(fraction) * num + 0.5))  # halves round up


def _digest(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, np.int64).tobytes()).hexdigest()


def edit_dataset(
    num_examples: int, forget_indices, scores, budget: int, *, score_name=None
):
    """Deletes the ``budget`` highest-scoring forget examples from a data set.

    Args:
      num_examples: size of the data set.
      forget_indices: ``[N1]`` indices (into the data set) of the forget set P1.
      scores: ``[N1]`` deletion scores aligned with ``forget_indices``.
      budget: how many forget examples to delete, in ``[0, N1]``.
      score_name: recorded in the manifest.

    Returns:
      ``(kept, manifest)``: the sorted kept indices of the data set and a dict
      with the counts and sha256 digests of the kept and removed index sets.

    >>> kept, m = edit_dataset(5, [1, 3], [0.2, 0.8], 1, score_name="norm")
    >>> kept.tolist(), m["removed_count"]
    ([0, 1, 2, 4], 1)
    """
    forget_indices = np.asarray(forget_indices)
    scores = np.asarray(scores)
    if forget_indices.ndim != 1 or forget_indices.size == 0:
        raise ValueError("forget_indices must be a non-empty 1-D array.")
    if scores.shape != forget_indices.shape:
        raise ValueError(
            f"scores {scores.shape} and forget_indices {forget_indices.shape}"
            " must have the same shape."
        )
    if not np.issubdtype(forget_indices.dtype, np.integer):
        raise TypeError(f"forget_indices must be integers, got {forget_indices.dtype}.")
    if forget_indices.min() < 0 or forget_indices.max() >= num_examples:
        raise ValueError(f"forget_indices must lie in [0, {num_examples}).")
    if np.unique(forget_indices).size != forget_indices.size:
        raise ValueError("forget_indices contains duplicates.")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}.")
    if not 0 <= int(budget) <= forget_indices.size:
        raise ValueError(
            f"budget must be in [0, {forget_indices.size}] (the forget set size),"
            f" got {budget}."
        )
    remove = np.asarray(select_for_removal(jnp.asarray(scores), int(budget)))
    removed = np.sort(forget_indices[remove])
    keep = np.ones(num_examples, bool)
    keep[removed] = False
    kept = np.flatnonzero(keep)
    manifest = {
        "score": score_name,
        "budget": int(budget),
        "forget_size": int(forget_indices.size),
        "fraction": int(budget) / forget_indices.size,
        "removed_count": int(removed.size),
        "kept_count": int(kept.size),
        "removed_sha256": _digest(removed),
        "kept_sha256": _digest(kept),
    }
    return kept, manifest
