"""Data: offline sources, seeded unlearning splits and fixed-shape batching.

Examples:
    >>> from jaxunlearn import data
    >>> ds = data.load("digits")
    >>> split = data.split(ds, "class", forget_classes=3, seed=0)
    >>> sorted(split.summary()["sizes"])
    ['forget', 'retain', 'test', 'val']
"""

from jaxunlearn.data._batching import (
    cycle_indices,
    epoch_indices,
    gather,
    num_batches,
    padded_batches,
    subset_epoch_indices,
)
from jaxunlearn.data._sources import dataset_fingerprint, load, names
from jaxunlearn.data._splits import (
    UnlearningData,
    class_split,
    group_split,
    random_split,
    split,
    subsample,
)

__all__ = [
    "UnlearningData",
    "class_split",
    "cycle_indices",
    "dataset_fingerprint",
    "epoch_indices",
    "gather",
    "group_split",
    "load",
    "names",
    "num_batches",
    "padded_batches",
    "random_split",
    "split",
    "subsample",
    "subset_epoch_indices",
]
