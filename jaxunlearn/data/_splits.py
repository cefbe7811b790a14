"""Seeded forget/retain/val/test splits for unlearning experiments (pure numpy).

Three protocols, all deterministic given ``seed``:

* ``"class"``: forget every training example of some classes.
* ``"random"``: forget a random fraction of the training examples.
* ``"group"``: forget whole pseudo-identity groups (k-means clusters inside each
  class) and test on groups never seen in training, as in the DLFD identity
  unlearning protocol.

The result is an :class:`UnlearningData` holding the arrays of each part, the
int64 indices into ``ds["train"]`` they came from, and sha256 hashes of those
indices so that runs can record exactly which split they used.
"""

import dataclasses
import functools
import hashlib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxunlearn.data._sources import dataset_fingerprint

MODES = ("class", "random", "group")
_PARTS = ("retain", "forget", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class UnlearningData:
    """One unlearning split of a dataset.

    Attributes:
        retain: ``{"image", "label"}`` of the training examples to keep.
        forget: ``{"image", "label"}`` of the training examples to unlearn.
        val: held-out examples from the train pool, never trained on.
        test: unseen data: ``ds["test"]`` (all classes) in ``"class"`` and
            ``"random"`` modes; the unseen groups of ``ds["train"]`` in
            ``"group"`` mode.
        num_classes: number of classes.
        mode: ``"class"``, ``"random"`` or ``"group"``.
        forget_classes: the forgotten classes, ``()`` unless ``mode == "class"``.
        indices: int64 indices into ``ds["train"]`` for ``"retain"``,
            ``"forget"`` and ``"val"`` (and ``"test"`` in group mode), sorted
            ascending. In group mode also ``"group_<part>"``: the int64 group
            id of each example of ``<part>``, aligned with ``indices[part]``.
        hashes: sha256 hex of every array in ``indices`` (same keys), plus
            ``"dataset"`` (:func:`dataset_fingerprint`) and ``"split"`` (a hash
            combining the mode, forget classes, dataset and all index hashes).
        seed: the seed the split was drawn with.
    """

    retain: dict[str, np.ndarray]
    forget: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    num_classes: int
    mode: str
    forget_classes: tuple[int, ...]
    indices: dict[str, np.ndarray]
    hashes: dict[str, str]
    seed: int

    @functools.cached_property
    def train(self) -> dict[str, np.ndarray]:
        """What the original model trains on: retain then forget, concatenated."""
        return {
            k: np.concatenate([self.retain[k], self.forget[k]])
            for k in ("image", "label")
        }

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description of the split.

        Returns:
            ``{"mode", "seed", "num_classes", "forget_classes", "sizes",
            "classes", "hashes"}`` where ``sizes`` and ``classes`` map each of
            ``retain``/``forget``/``val``/``test`` to its example count and the
            sorted list of labels present; group mode adds ``"num_groups"``
            per part.
        """
        parts = {p: getattr(self, p) for p in _PARTS}
        out: dict[str, Any] = {
            "mode": self.mode,
            "seed": int(self.seed),
            "num_classes": int(self.num_classes),
            "forget_classes": [int(c) for c in self.forget_classes],
            "sizes": {p: int(len(d["label"])) for p, d in parts.items()},
            "classes": {
                p: [int(c) for c in np.unique(d["label"])] for p, d in parts.items()
            },
            "hashes": dict(self.hashes),
        }
        if self.mode == "group":
            out["num_groups"] = {
                p: int(len(np.unique(self.indices[f"group_{p}"]))) for p in _PARTS
            }
        return out


def split(
    ds: Mapping[str, Any],
    mode: str,
    *,
    seed: int = 0,
    forget_classes: int | Iterable[int] | None = None,
    forget_fraction: float = 0.1,
    val_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    groups_per_class: int = 10,
    features: np.ndarray | None = None,
) -> UnlearningData:
    """Builds an unlearning split; dispatches on ``mode``.

    Args:
        ds: dataset dict from :func:`jaxunlearn.data.load`.
        mode: ``"class"`` (:func:`class_split`), ``"random"``
            (:func:`random_split`) or ``"group"`` (:func:`group_split`).
        seed: non-negative int seeding every random choice.
        forget_classes: class mode only (required there).
        forget_fraction: random mode: fraction of the non-val train pool;
            group mode: fraction of the groups.
        val_fraction: fraction of the train pool held out as validation.
        unseen_fraction: group mode only: fraction of groups held out as test.
        groups_per_class: group mode only: k-means clusters per class.
        features: group mode only: ``[N, D]`` features to cluster on.

    Returns:
        The :class:`UnlearningData`.

    Raises:
        ValueError: unknown ``mode``, or options that do not apply to it.
        TypeError: ``mode`` is not a str.

    Examples:
        >>> from jaxunlearn.data import load
        >>> data = split(load("digits"), "random", forget_fraction=0.1, seed=0)
        >>> data.summary()["sizes"]["forget"]
        129
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, one of {MODES}; got {mode!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if mode != "class" and forget_classes is not None:
        raise ValueError(
            f"forget_classes only applies to mode='class', got mode={mode!r}."
        )
    if mode != "group" and features is not None:
        raise ValueError(f"features only applies to mode='group', got mode={mode!r}.")
    if mode == "class":
        if forget_classes is None:
            raise ValueError("forget_classes is required when mode='class'.")
        return class_split(ds, forget_classes, val_fraction=val_fraction, seed=seed)
    if mode == "random":
        return random_split(ds, forget_fraction, val_fraction=val_fraction, seed=seed)
    return group_split(
        ds,
        forget_fraction=forget_fraction,
        unseen_fraction=unseen_fraction,
        val_fraction=val_fraction,
        groups_per_class=groups_per_class,
        features=features,
        seed=seed,
    )


def class_split(
    ds: Mapping[str, Any],
    forget_classes: int | Iterable[int],
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> UnlearningData:
    """Class forgetting: unlearn every training example of some classes.

    ``val`` is a seeded, stratified ``val_fraction`` of ``ds["train"]`` (all
    classes, rounded per class); ``forget`` is the rest of the forget classes;
    ``retain`` everything else; ``test`` is ``ds["test"]`` with all classes.
    For the same seed the val set equals that of :func:`random_split`.

    Args:
        ds: dataset dict from :func:`jaxunlearn.data.load`.
        forget_classes: one class or a sequence of classes (ints).
        val_fraction: fraction in ``[0, 1)`` of the train set held out.
        seed: non-negative int.

    Returns:
        The :class:`UnlearningData` with ``mode="class"``.

    Raises:
        ValueError: a forget class out of range or absent from the train
            labels, all classes forgotten, an empty forget set, bad fractions
            or malformed ``ds``.
        TypeError: ``forget_classes`` is not an int or a sequence of ints.

    Examples:
        >>> from jaxunlearn.data import load
        >>> data = class_split(load("digits"), [3, 5], seed=0)
        >>> data.forget_classes, sorted(set(data.forget["label"].tolist()))
        ((3, 5), [3, 5])
    """
    images, labels, num_classes = _check_ds(ds)
    seed = _check_seed(seed)
    val_fraction = _check_fraction(val_fraction, "val_fraction", allow_zero=True)
    classes = _check_forget_classes(forget_classes, num_classes, labels)
    rng = np.random.default_rng(seed)
    val = _stratified_sample(labels, np.arange(len(labels)), val_fraction, rng)
    pool = np.setdiff1d(np.arange(len(labels)), val)
    in_forget = np.isin(labels[pool], classes)
    forget, retain = pool[in_forget], pool[~in_forget]
    if len(forget) == 0:
        raise ValueError(
            f"forget_classes {classes} leave no forget examples outside the "
            f"validation set (val_fraction={val_fraction}); lower val_fraction."
        )
    if len(retain) == 0:
        raise ValueError("forget_classes leave no retain examples.")
    indices = {"retain": retain, "forget": forget, "val": val}
    return _build(ds, images, labels, num_classes, "class", classes, indices, seed)


def random_split(
    ds: Mapping[str, Any],
    forget_fraction: float,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> UnlearningData:
    """Instance forgetting: unlearn a random fraction of the training examples.

    ``val`` is a seeded, stratified ``val_fraction`` of ``ds["train"]``;
    ``forget`` is ``round(forget_fraction * P)`` examples drawn uniformly
    without replacement from the remaining pool of ``P`` examples; ``retain``
    is the rest; ``test`` is ``ds["test"]``.

    Args:
        ds: dataset dict from :func:`jaxunlearn.data.load`.
        forget_fraction: fraction in ``(0, 1)`` of the non-val pool to forget.
        val_fraction: fraction in ``[0, 1)`` of the train set held out.
        seed: non-negative int.

    Returns:
        The :class:`UnlearningData` with ``mode="random"``.

    Raises:
        ValueError: a fraction out of range, an empty forget or retain set, or
            malformed ``ds``.

    Examples:
        >>> from jaxunlearn.data import load
        >>> data = random_split(load("digits"), 0.1, seed=0)
        >>> len(data.forget["label"]), len(data.retain["label"])
        (129, 1163)
    """
    images, labels, num_classes = _check_ds(ds)
    seed = _check_seed(seed)
    forget_fraction = _check_fraction(forget_fraction, "forget_fraction")
    val_fraction = _check_fraction(val_fraction, "val_fraction", allow_zero=True)
    rng = np.random.default_rng(seed)
    val = _stratified_sample(labels, np.arange(len(labels)), val_fraction, rng)
    pool = np.setdiff1d(np.arange(len(labels)), val)
    n_forget = _round(forget_fraction * len(pool))
    if n_forget == 0:
        raise ValueError(
            f"forget_fraction={forget_fraction} selects no example from a pool of "
            f"{len(pool)}; increase it."
        )
    if n_forget >= len(pool):
        raise ValueError(
            f"forget_fraction={forget_fraction} leaves no retain example from a "
            f"pool of {len(pool)}; decrease it."
        )
    forget = np.sort(rng.choice(pool, size=n_forget, replace=False))
    retain = np.setdiff1d(pool, forget)
    indices = {"retain": retain, "forget": forget, "val": val}
    return _build(ds, images, labels, num_classes, "random", (), indices, seed)


def group_split(
    ds: Mapping[str, Any],
    *,
    forget_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    val_fraction: float = 0.1,
    groups_per_class: int = 10,
    features: np.ndarray | None = None,
    seed: int = 0,
) -> UnlearningData:
    """Group (pseudo-identity) forgetting following the DLFD protocol.

    Inside each class, k-means (scikit-learn ``KMeans``, ``n_init=3``,
    ``random_state=seed``) splits the training examples into
    ``min(groups_per_class, class size)`` groups, on ``features`` if given or on
    the flattened images. The ``G`` groups are ordered by a seeded stratified
    shuffle (each class's groups shuffled, then dealt round-robin over the
    classes in a random order per round), and whole groups are dealt in that
    order: ``max(1, round(forget_fraction * G))`` to forget,
    ``max(1, round(unseen_fraction * G))`` to test (identities never trained
    on), ``round(val_fraction * G)`` to val and the rest (at least one) to
    retain. A group never straddles two parts. ``ds["test"]`` is not used.

    Group ids are global ints; ``indices["group_<part>"]`` holds the group id
    of each example of ``<part>``.

    Args:
        ds: dataset dict from :func:`jaxunlearn.data.load`.
        forget_fraction: fraction in ``(0, 1)`` of the groups to forget.
        unseen_fraction: fraction in ``(0, 1)`` of the groups held out as test.
        val_fraction: fraction in ``[0, 1)`` of the groups held out as val.
        groups_per_class: positive int, k-means clusters per class.
        features: optional ``[N, D]`` array aligned with ``ds["train"]``
            (e.g. embeddings of a pretrained model).
        seed: non-negative int.

    Returns:
        The :class:`UnlearningData` with ``mode="group"``.

    Raises:
        ValueError: bad fractions (or fractions leaving no retain group), too
            few groups, misaligned ``features`` or malformed ``ds``.
        TypeError: ``groups_per_class`` is not an int.

    Examples:
        >>> from jaxunlearn.data import load
        >>> data = group_split(load("digits"), seed=0)
        >>> data.summary()["num_groups"]
        {'retain': 60, 'forget': 10, 'val': 10, 'test': 20}
    """
    images, labels, num_classes = _check_ds(ds)
    seed = _check_seed(seed)
    forget_fraction = _check_fraction(forget_fraction, "forget_fraction")
    unseen_fraction = _check_fraction(unseen_fraction, "unseen_fraction")
    val_fraction = _check_fraction(val_fraction, "val_fraction", allow_zero=True)
    if isinstance(groups_per_class, bool) or not isinstance(
        groups_per_class, numbers.Integral
    ):
        raise TypeError(f"groups_per_class must be an int, got {groups_per_class!r}.")
    if groups_per_class < 1:
        raise ValueError(f"groups_per_class must be >= 1, got {groups_per_class}.")
    feats = _check_features(features, images)

    group = _kmeans_groups(feats, labels, int(groups_per_class), seed)
    num_groups = int(group.max()) + 1 if len(group) else 0
    n_forget = max(1, _round(forget_fraction * num_groups))
    n_test = max(1, _round(unseen_fraction * num_groups))
    n_val = _round(val_fraction * num_groups)
    if n_forget + n_test + n_val >= num_groups:
        raise ValueError(
            f"{num_groups} groups cannot give forget={n_forget}, test={n_test}, "
            f"val={n_val} groups and still leave a retain group; lower "
            "forget_fraction/unseen_fraction/val_fraction or raise "
            f"groups_per_class (={groups_per_class})."
        )
    rng = np.random.default_rng(seed)
    order = _stratified_group_order(group, labels, rng)
    bounds = np.cumsum([n_forget, n_test, n_val])
    part_groups = {
        "forget": order[: bounds[0]],
        "test": order[bounds[0] : bounds[1]],
        "val": order[bounds[1] : bounds[2]],
        "retain": order[bounds[2] :],
    }
    indices: dict[str, np.ndarray] = {}
    for part in ("retain", "forget", "val", "test"):
        idx = np.flatnonzero(np.isin(group, part_groups[part])).astype(np.int64)
        indices[part] = idx
    for part in ("retain", "forget", "val", "test"):
        indices[f"group_{part}"] = group[indices[part]]
    return _build(ds, images, labels, num_classes, "group", (), indices, seed)


# --------------------------------------------------------------------------- #
# Helpers.


def subsample(part: dict, n: int | None, seed: int) -> dict:
    """A seeded random subset of ``n`` examples of ``part``, in index order.

    ``part`` maps names to arrays of one length (``{"image", "label"}``);
    ``n`` None, 0 or at least the size returns every example.

    >>> import numpy as np
    >>> subsample({"label": np.arange(10)}, 3, seed=0)["label"].tolist()
    [5, 6, 9]
    """
    size = len(part["label"])
    if not n or n >= size:
        return dict(part)
    keep = np.sort(np.random.default_rng(seed).choice(size, n, False))
    return {k: v[keep] for k, v in part.items()}


def _round(x: float) -> int:
    """Rounds half up (Python's ``round`` rounds half to even)."""
    return int(math.floor(x + 0.5))


def _check_ds(ds: Any) -> tuple[np.ndarray, np.ndarray, int]:
    if not isinstance(ds, Mapping):
        raise TypeError(f"ds must be a dict from data.load, got {type(ds).__name__}.")
    parts = {}
    for part in ("train", "test"):
        d = ds.get(part)
        if not isinstance(d, Mapping) or "image" not in d or "label" not in d:
            raise ValueError(
                f"ds[{part!r}] must be a dict with 'image' and 'label' arrays."
            )
        image, label = np.asarray(d["image"]), np.asarray(d["label"])
        if label.ndim != 1:
            raise ValueError(
                f"label: ds[{part!r}]['label'] must be rank 1 [N], got shape "
                f"{label.shape}."
            )
        if not np.issubdtype(label.dtype, np.integer):
            raise TypeError(
                f"label: ds[{part!r}]['label'] must hold integers, got dtype "
                f"{label.dtype}."
            )
        if image.ndim < 1 or len(image) != len(label):
            raise ValueError(
                f"image/label: ds[{part!r}]['image'] has shape {image.shape} but "
                f"ds[{part!r}]['label'] has {len(label)} entries; lengths must match."
            )
        parts[part] = (image, label)
    num_classes = ds.get("num_classes")
    if num_classes is None:
        highs = [int(lab.max()) for _, lab in parts.values() if lab.size]
        num_classes = max(highs, default=-1) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(
            f"num_classes: ds['num_classes'] must be an int, got {num_classes!r}."
        )
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(
            f"num_classes: ds['num_classes'] must be >= 1, got {num_classes}."
        )
    for part, (_, label) in parts.items():
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            raise ValueError(
                f"label: ds[{part!r}]['label'] has values in [{label.min()}, "
                f"{label.max()}], outside [0, num_classes={num_classes})."
            )
    images, labels = parts["train"]
    if len(labels) == 0:
        raise ValueError("label: ds['train'] is empty.")
    return images, labels, num_classes


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    return int(seed)


def _check_fraction(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {value!r}.")
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}.")
    return value


def _check_forget_classes(
    forget_classes: Any, num_classes: int, labels: np.ndarray
) -> tuple[int, ...]:
    def as_int(c: Any) -> int:
        if isinstance(c, bool | np.bool_) or not isinstance(c, numbers.Integral):
            raise TypeError(
                "forget_classes must be an int or a sequence of ints, got "
                f"{forget_classes!r}."
            )
        return int(c)

    if isinstance(forget_classes, numbers.Integral) or isinstance(
        forget_classes, bool | np.bool_
    ):
        classes = [as_int(forget_classes)]
    elif isinstance(forget_classes, str | bytes | Mapping) or not isinstance(
        forget_classes, Iterable
    ):
        raise TypeError(
            "forget_classes must be an int or a sequence of ints, got "
            f"{forget_classes!r}."
        )
    else:
        if isinstance(forget_classes, np.ndarray) and forget_classes.ndim > 1:
            raise ValueError(
                f"forget_classes must be 1-D, got shape {forget_classes.shape}."
            )
        classes = [as_int(c) for c in forget_classes]
    if not classes:
        raise ValueError("forget_classes is empty; give at least one class.")
    present = set(np.unique(labels).tolist())
    for c in classes:
        if not 0 <= c < num_classes:
            raise ValueError(
                f"forget_classes: class {c} is out of range [0, {num_classes})."
            )
        if c not in present:
            raise ValueError(
                f"forget_classes: class {c} does not occur in ds['train']['label']."
            )
    result = tuple(sorted(set(classes)))
    if present <= set(result):
        raise ValueError(
            f"forget_classes {result} covers every class of the train set; "
            "nothing would be retained."
        )
    return result


def _check_features(features: Any, images: np.ndarray) -> np.ndarray:
    if features is None:
        return images.reshape(len(images), -1)
    feats = np.asarray(features)
    if feats.ndim != 2 or len(feats) != len(images):
        raise ValueError(
            f"features must be [N, D] with N={len(images)} (aligned with "
            f"ds['train']), got shape {feats.shape}."
        )
    if not np.issubdtype(feats.dtype, np.number) or np.issubdtype(
        feats.dtype, np.complexfloating
    ):
        raise ValueError(f"features must be real numbers, got dtype {feats.dtype}.")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contain NaN or inf.")
    return feats


def _stratified_sample(
    labels: np.ndarray, pool: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Seeded per-class sample of ``round(fraction * n_c)`` indices of ``pool``.

    At least one example of each class stays out of the sample.
    """
    chosen = []
    for c in np.unique(labels[pool]):
        members = pool[labels[pool] == c]
        k = min(_round(fraction * len(members)), max(len(members) - 1, 0))
        chosen.append(rng.permutation(members)[:k])
    out = np.concatenate(chosen) if chosen else np.zeros((0,), np.int64)
    return np.sort(out).astype(np.int64)


def _kmeans_groups(
    feats: np.ndarray, labels: np.ndarray, groups_per_class: int, seed: int
) -> np.ndarray:
    """Global int64 group id per training example (k-means inside each class)."""
    from sklearn.cluster import KMeans

    group = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        x = feats[members].astype(np.float32)
        k = min(groups_per_class, len(members))
        if k == 1:
            assign = np.zeros(len(members), np.int64)
        else:
            km = KMeans(n_clusters=k, n_init=3, random_state=seed)
            raw = km.fit_predict(x)
            # Renumber densely in case a cluster came out empty.
            _, assign = np.unique(raw, return_inverse=True)
        group[members] = offset + assign
        offset += int(assign.max()) + 1
    return group


def _stratified_group_order(
    group: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Seeded order of group ids that spreads each class over the order evenly."""
    group_class = np.zeros(int(group.max()) + 1, np.int64)
    group_class[group] = labels
    queues = [
        list(rng.permutation(np.flatnonzero(group_class == c)))
        for c in np.unique(group_class)
    ]
    order: list[int] = []
    while any(queues):
        live = [i for i, q in enumerate(queues) if q]
        for i in rng.permutation(live):
            order.append(int(queues[i].pop(0)))
    return np.asarray(order, np.int64)


def _hash_array(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype="<i8").tobytes()).hexdigest()


def _build(
    ds: Mapping[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    mode: str,
    forget_classes: tuple[int, ...],
    indices: dict[str, np.ndarray],
    seed: int,
) -> UnlearningData:
    indices = {k: np.asarray(v, np.int64) for k, v in indices.items()}
    labels32 = labels.astype(np.int32)

    def take(part: str) -> dict[str, np.ndarray]:
        idx = indices[part]
        return {"image": images[idx], "label": labels32[idx]}

    if mode == "group":
        test = take("test")
    else:
        test = {
            "image": np.asarray(ds["test"]["image"]),
            "label": np.asarray(ds["test"]["label"]).astype(np.int32),
        }
    hashes = {k: _hash_array(v) for k, v in indices.items()}
    hashes["dataset"] = dataset_fingerprint(ds)
    combined = hashlib.sha256()
    combined.update(f"mode={mode};forget_classes={list(forget_classes)};".encode())
    for k in sorted(hashes):
        combined.update(f"{k}={hashes[k]};".encode())
    hashes["split"] = combined.hexdigest()
    return UnlearningData(
        retain=take("retain"),
        forget=take("forget"),
        val=take("val"),
        test=test,
        num_classes=num_classes,
        mode=mode,
        forget_classes=forget_classes,
        indices=indices,
        hashes=hashes,
        seed=seed,
    )
