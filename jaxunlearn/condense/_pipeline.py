"""The reduced retain set: residual images plus one blended image per free cluster.

``cluster`` runs once per training set (random-network features, per-class
k-means over ALL training images, forget included); ``condense_retain`` runs
once per unlearning round with the cumulative forget set: it recomputes the
free / residual partition against the same fine labels and reruns Blend.
``reduced_retain_set`` is both in one call. Times of the two stages are
reported separately (the papers time unlearning without them).
"""

import time
from typing import NamedTuple

import jax
import numpy as np
from jax.typing import ArrayLike

from jaxunlearn.condense import _blend, _features, _kmeans, _partition


class Clustering(NamedTuple):
    """Output of :func:`cluster` (reuse it across unlearning rounds).

    Attributes:
      fine_labels: int64 ``[N]`` fine label ``class * K + cluster``.
      k_per_class: ``K``.
      num_images: ``N``.
      features_s: seconds spent on the random-network features.
      kmeans_s: seconds spent on k-means.
    """

    fine_labels: np.ndarray
    k_per_class: int
    num_images: int
    features_s: float
    kmeans_s: float

    @property
    def time_s(self) -> float:
        """Features plus k-means seconds."""
        return self.features_s + self.kmeans_s


def cluster(
    images: ArrayLike,
    labels: ArrayLike,
    k_per_class: int,
    *,
    key: jax.Array,
    width: int = 128,
    depth: int = 3,
    batch_size: int = 256,
    iters: int = 100,
    tol: float = 1e-4,
) -> Clustering:
    """Fine labels of ALL training images (forget included), computed once.

    Features come from one untrained ConvNet-3 (:func:`random_features`,
    key ``fold_in(key, 0)``), then :func:`class_kmeans` (key
    ``fold_in(key, 1)``).

    Args:
      images: ``[N, H, W, C]`` training images.
      labels: int ``[N]`` classes.
      k_per_class: clusters per class (the IPC of the papers).
      key: PRNG key.
      width, depth: the feature extractor's conv channels and blocks.
      batch_size: feature batch.
      iters, tol: k-means stopping rule.

    Returns:
      :class:`Clustering`.
    """
    images = _features.check_image_batch("images", images)
    t = time.perf_counter()
    feats = _features.random_features(
        images,
        key=jax.random.fold_in(key, 0),
        width=width,
        depth=depth,
        batch_size=batch_size,
    )
    features_s = time.perf_counter() - t
    t = time.perf_counter()
    fine = _kmeans.class_kmeans(
        feats, labels, k_per_class, key=jax.random.fold_in(key, 1), iters=iters, tol=tol
    )
    kmeans_s = time.perf_counter() - t
    return Clustering(fine, int(k_per_class), len(images), features_s, kmeans_s)


def condense_retain(
    clustering: Clustering,
    images: ArrayLike,
    labels: ArrayLike,
    forget_indices: ArrayLike,
    *,
    key: jax.Array,
    iterations: int = 12,
    learning_rate: float | None = None,
    momentum: float = 0.5,
    extractor: str = "random",
    width: int = 128,
    depth: int = 3,
    vectorize: bool = True,
    batch_size: int | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Reduced retain set for one forget set (run again each round).

    Partitions the fine clusters against ``forget_indices`` (pass the
    cumulative forget set in multi-round unlearning), keeps the residual
    retain images raw and blends every free cluster (:func:`blend`; the
    learning rate defaults to ``blend_learning_rate(k_per_class)``).

    Args:
      clustering: from :func:`cluster` on the same ``images``.
      images: ``[N, H, W, C]`` training images.
      labels: int ``[N]``.
      forget_indices: indices into ``images`` to forget.
      key: PRNG key of the Blend extractors.
      iterations, learning_rate, momentum, extractor, width, depth,
        vectorize, batch_size: as in :func:`blend`.

    Returns:
      ``(reduced, info)``: ``reduced = {"image": float32 [M, H, W, C],
      "label": int32 [M]}`` (residual images first, then one blended image
      per free cluster); ``info`` holds counts (``"retain"``,
      ``"residual"``, ``"free_clusters"``, ``"free_images"``, ``"reduced"``,
      ``"ratio"`` = reduced / retain), ``"blend_s"``, ``"cluster_s"`` (the
      clustering's time, for the record) and ``"blend"`` (its diagnostics).

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import condense
      >>> x = np.random.default_rng(0).random((40, 8, 8, 1), np.float32)
      >>> y = np.arange(40) % 2
      >>> cl = condense.cluster(x, y, 4, key=jax.random.key(0), width=4)
      >>> red, info = condense.condense_retain(cl, x, y, [0, 1, 2],
      ...     key=jax.random.key(1), iterations=2, width=4)
      >>> info["reduced"] == len(red["label"]) == info["residual"] + info[
      ...     "free_clusters"]
      True
    """
    images = _features.check_image_batch("images", images)
    labels = np.asarray(labels)
    if len(images) != clustering.num_images or labels.shape != (len(images),):
        raise ValueError(
            f"`images` ({len(images)}) and `labels` {labels.shape} must match the "
            f"clustering's N = {clustering.num_images}."
        )
    t = time.perf_counter()
    part = _partition.partition(clustering.fine_labels, forget_indices)
    n_forget = len(
        _partition.check_index_array("forget_indices", forget_indices, len(images))
    )
    parts_img = [images[part.residual]]
    parts_lab = [labels[part.residual].astype(np.int32)]
    diag = None
    n_free = len(part.cluster)
    if n_free:
        blended, blabels, diag = _blend.blend(
            images,
            part.index,
            part.mask,
            labels,
            key=key,
            iterations=iterations,
            learning_rate=learning_rate,
            ipc=clustering.k_per_class,
            momentum=momentum,
            extractor=extractor,
            width=width,
            depth=depth,
            vectorize=vectorize,
            batch_size=batch_size,
        )
        parts_img.append(blended)
        parts_lab.append(blabels)
    reduced = {
        "image": np.concatenate(parts_img).astype(np.float32),
        "label": np.concatenate(parts_lab).astype(np.int32),
    }
    retain = len(images) - n_forget
    info = {
        "retain": retain,
        "forget": n_forget,
        "residual": len(part.residual),
        "free_clusters": n_free,
        "free_images": int(part.mask.sum()),
        "reduced": len(reduced["label"]),
        "ratio": len(reduced["label"]) / retain if retain else float("nan"),
        "blend_s": time.perf_counter() - t,
        "cluster_s": clustering.time_s,
        "blend": diag,
    }
    return reduced, info


def reduced_retain_set(
    images: ArrayLike,
    labels: ArrayLike,
    forget_indices: ArrayLike,
    k_per_class: int,
    *,
    key: jax.Array,
    iterations: int = 12,
    learning_rate: float | None = None,
    extractor: str = "random",
    width: int = 128,
    depth: int = 3,
    vectorize: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`cluster` then :func:`condense_retain` (single-round use).

    The clustering uses ``fold_in(key, 0)``, Blend ``fold_in(key, 1)``; the
    returned ``info`` also holds ``"clustering"`` (reuse it for later
    rounds with :func:`condense_retain`).

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import condense
      >>> x = np.random.default_rng(0).random((40, 8, 8, 1), np.float32)
      >>> y = np.arange(40) % 2
      >>> red, info = condense.reduced_retain_set(x, y, [0, 2], 4,
      ...     key=jax.random.key(0), iterations=2, width=4)
      >>> red["image"].shape[1:], info["retain"]
      ((8, 8, 1), 38)
    """
    clustering = cluster(
        images,
        labels,
        k_per_class,
        key=jax.random.fold_in(key, 0),
        width=width,
        depth=depth,
    )
    reduced, info = condense_retain(
        clustering,
        images,
        labels,
        forget_indices,
        key=jax.random.fold_in(key, 1),
        iterations=iterations,
        learning_rate=learning_rate,
        extractor=extractor,
        width=width,
        depth=depth,
        vectorize=vectorize,
    )
    return reduced, {**info, "clustering": clustering}
