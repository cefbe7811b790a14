"""Blend dataset condensation for unlearning, and the DM baseline.

Pipeline (Blend paper, Algorithms 1-2):

* ``random_features`` (an untrained ConvNet-3) and ``class_kmeans``
  (k-means++ and Lloyd inside every class, ALL training images) give fine
  labels ``class * K + cluster``; ``cluster`` does both once;
* ``partition`` splits the fine clusters against the forget set into FREE
  clusters (no forget member) and RESIDUAL retain images (the retain members
  of touched clusters);
* ``blend`` condenses every free cluster into one image, a sum-normalised
  weighted average of its members whose weights match the cluster's mean
  random-network features; ``extractor="random"`` samples a fresh network
  every iteration (the paper), ``"fixed"`` keeps one (the reference code);
* ``condense_retain`` (each round, cumulative forget set) and
  ``reduced_retain_set`` (one call) assemble residual plus blended images;
* ``dm``: the distribution-matching baseline on pixels (Zhao & Bilen 2023).

The pure pieces (``kmeans``, ``blend_init`` / ``blend_step``, ``dm_init`` /
``dm_step``, losses) run under ``jax.jit`` / ``jax.vmap``; ``blend``, ``dm``
and ``class_kmeans`` compile them and run the loop.

Example::

    >>> from jaxunlearn import condense
    >>> fine = [0, 0, 1, 1, 1, 2]          # fine labels of 6 training images
    >>> part = condense.partition(fine, forget_indices=[2])
    >>> part.cluster.tolist(), part.residual.tolist()   # free clusters, kept raw
    ([0, 2], [3, 4])
    >>> round(condense.blend_learning_rate(10), 3)      # default lr at K = 10
    0.166
"""

from jaxunlearn.condense._blend import (
    EXTRACTORS,
    BlendState,
    blend,
    blend_image,
    blend_images,
    blend_init,
    blend_learning_rate,
    blend_loss,
    blend_step,
    cluster_loss,
    compact_clusters,
    extractor_for_step,
    mean_features,
)
from jaxunlearn.condense._dm import (
    DMState,
    dm,
    dm_init,
    dm_loss,
    dm_step,
    sample_class_batches,
)
from jaxunlearn.condense._features import (
    batched_embed,
    embed,
    extractor_apply_fn,
    random_features,
    sample_extractor,
)
from jaxunlearn.condense._kmeans import KMeansResult, class_kmeans, kmeans
from jaxunlearn.condense._partition import Partition, partition
from jaxunlearn.condense._pipeline import (
    Clustering,
    cluster,
    condense_retain,
    reduced_retain_set,
)

__all__ = [
    "EXTRACTORS",
    "BlendState",
    "Clustering",
    "DMState",
    "KMeansResult",
    "Partition",
    "batched_embed",
    "blend",
    "blend_image",
    "blend_images",
    "blend_init",
    "blend_learning_rate",
    "blend_loss",
    "blend_step",
    "class_kmeans",
    "cluster",
    "cluster_loss",
    "compact_clusters",
    "condense_retain",
    "dm",
    "dm_init",
    "dm_loss",
    "dm_step",
    "embed",
    "extractor_apply_fn",
    "extractor_for_step",
    "kmeans",
    "mean_features",
    "partition",
    "random_features",
    "reduced_retain_set",
    "sample_class_batches",
    "sample_extractor",
]
