"""Offline dataset sources returning plain numpy dicts.

Every loader returns the same structure::

    {"train": {"image": float32 [N, H, W, C], "label": int32 [N]},
     "test": {"image": ..., "label": ...},
     "num_classes": int}

Pixel values are scaled to ``[0, 1]`` (scikit-learn digits by ``1/16``, uint8
sources by ``1/255``). Nothing here touches the network: the embedded
``"digits"`` set ships with scikit-learn, Fashion-MNIST is read from the IDX
files of the Debian package ``dataset-fashion-mnist``, ``"idx:PATH"`` and
``"npz:PATH"`` read local files, and TFDS names load through the optional
``tensorflow_datasets`` dependency (``pip install 'jaxunlearn[data]'``) only
when the data was prepared beforehand.
"""

import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

_BUILTIN_NAMES = ("digits", "fashion_mnist")
_PREFIXES = ("idx:", "npz:", "tfds:")
_TFDS_NAMES = ("cifar10", "cifar100", "emnist", "kmnist", "mnist", "svhn_cropped")
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_NPZ_KEYS = (
    ("image_train", "label_train", "image_test", "label_test"),
    ("x_train", "y_train", "x_test", "y_test"),
)


def names() -> tuple[str, ...]:
    """Names of the built-in, offline datasets.

    Besides these, :func:`load` accepts the prefixes ``"idx:PATH"`` (a directory
    of MNIST-format IDX files), ``"npz:PATH"`` (a ``.npz`` of arrays) and
    ``"tfds:NAME"`` (any TensorFlow Datasets name, prepared beforehand), and the
    plain TFDS names ``cifar10``, ``cifar100``, ``emnist``, ``kmnist``, ``mnist``
    and ``svhn_cropped``.

    Returns:
        ``("digits", "fashion_mnist")``.
    """
    return _BUILTIN_NAMES


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    standardize: bool = False,
    **kw: Any,
) -> dict[str, Any]:
    """Loads a dataset as numpy arrays, without using the network.

    Name resolution:

    * ``"digits"``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes)
      with a seeded stratified train/test split; keywords ``test_fraction=0.2``
      and ``split_seed=0``. ``data_dir`` is ignored.
    * ``"fashion_mnist"``: IDX files in ``data_dir`` (default
      ``/usr/share/datasets/fashion-mnist``, from ``apt-get install
      dataset-fashion-mnist``).
    * ``"idx:PATH"``: any directory of MNIST-format IDX files named
      ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or
      with ``.gz``. ``"mnist"`` and ``"kmnist"`` with a ``data_dir`` holding
      such files read them the same way.
    * ``"npz:PATH"``: a ``.npz`` with ``image_train``, ``label_train``,
      ``image_test``, ``label_test`` (or ``x_train``, ``y_train``, ``x_test``,
      ``y_test``) and optionally ``num_classes``. Images ``[N, H, W]`` get a
      channel axis; uint8 (or integer in ``[0, 255]``) images are divided by
      255, float images are kept as float32.
    * ``"tfds:NAME"`` or one of ``cifar10``, ``cifar100``, ``emnist``,
      ``kmnist``, ``mnist``, ``svhn_cropped``: TensorFlow Datasets with
      ``download=False`` from ``data_dir`` (TFDS default when None).

    Args:
        name: dataset name, see above and :func:`names`.
        data_dir: directory holding the files (IDX sources) or the prepared
            TFDS data.
        standardize: if True, subtract the per-channel mean of the *train*
            images and divide by their per-channel standard deviation (a
            channel with zero spread is divided by 1). The same train
            statistics are applied to the test images, so no test information
            leaks into the normalisation.
        **kw: source options; only ``"digits"`` takes any (``test_fraction``,
            ``split_seed``).

    Returns:
        ``{"train": {"image", "label"}, "test": {"image", "label"},
        "num_classes": int}`` with float32 images ``[N, H, W, C]`` and int32
        labels ``[N]``.

    Raises:
        ValueError: unknown name, bad option values, or corrupt files.
        TypeError: unexpected keyword arguments or wrong argument types.
        FileNotFoundError: the files are missing; the message says how to get
            them.
        ImportError: a TFDS name without ``tensorflow_datasets`` installed.

    Examples:
        >>> ds = load("digits")
        >>> ds["train"]["image"].shape, ds["num_classes"]
        ((1437, 8, 8, 1), 10)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}.")
    if not isinstance(standardize, bool | np.bool_):
        raise TypeError(f"standardize must be a bool, got {standardize!r}.")
    if name == "digits":
        ds = _load_digits(**kw)
    else:
        if kw:
            raise TypeError(
                f"load({name!r}) got unexpected keyword arguments {sorted(kw)}; "
                "only 'digits' takes extra options (test_fraction, split_seed)."
            )
        if name == "fashion_mnist":
            ds = _load_fashion_mnist(data_dir)
        elif name.startswith("idx:"):
            ds = _load_idx_dir(_prefixed_path(name, "idx:"))
        elif name.startswith("npz:"):
            ds = _load_npz(_prefixed_path(name, "npz:"))
        elif name.startswith("tfds:"):
            tfds_name = name[len("tfds:") :]
            if not tfds_name:
                raise ValueError(
                    "name 'tfds:' needs a dataset name, e.g. 'tfds:cifar10'."
                )
            ds = _load_tfds(tfds_name, data_dir)
        elif name in _TFDS_NAMES:
            if (
                name in ("mnist", "kmnist")
                and data_dir is not None
                and _find_idx_files(os.fspath(data_dir)) is not None
            ):
                ds = _load_idx_dir(os.fspath(data_dir))
            else:
                ds = _load_tfds(name, data_dir)
        else:
            raise ValueError(
                f"Unknown dataset name {name!r}. Valid names: {list(_BUILTIN_NAMES)}; "
                f"TFDS names: {list(_TFDS_NAMES)}; prefixes: 'idx:PATH' (directory "
                "of MNIST-format IDX files), 'npz:PATH' (.npz arrays), 'tfds:NAME' "
                "(any prepared TensorFlow Datasets name)."
            )
    if standardize:
        ds = _standardize(ds)
    return ds


def dataset_fingerprint(ds: Mapping[str, Any]) -> str:
    """Content hash of a dataset, for cache keys.

    Args:
        ds: a dataset dict as returned by :func:`load`.

    Returns:
        sha256 hex digest over the dtype, shape and bytes of the train and test
        images and labels.

    Raises:
        ValueError: ``ds`` lacks a ``train``/``test`` part or an image/label array.
    """
    h = hashlib.sha256()
    for part in ("train", "test"):
        if not isinstance(ds, Mapping) or not isinstance(ds.get(part), Mapping):
            raise ValueError(f"ds must be a dict with a {part!r} dict, got {type(ds)}.")
        for key in ("image", "label"):
            if key not in ds[part]:
                raise ValueError(f"ds[{part!r}] has no {key!r} array.")
            arr = np.ascontiguousarray(ds[part][key])
            h.update(f"{part}/{key}/{arr.dtype.str}/{arr.shape};".encode())
            h.update(arr.reshape(-1).view(np.uint8) if arr.size else b"")
    return h.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one MNIST-format IDX file (raw or gzip-compressed).

    Args:
        path: the file; gzip is detected from its content, not its name.

    Returns:
        The array with the dims stored in the header, in native byte order.

    Raises:
        ValueError: naming ``path`` when the file is corrupt or truncated.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(
                f"IDX file {path!r} is a corrupt or truncated gzip: {e}"
            ) from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(
            f"IDX file {path!r} has a bad magic number {raw[:4].hex() or '(empty)'}; "
            "expected 0000<type><ndim>."
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path!r} has an unknown type code 0x{code:02x}.")
    if ndim == 0:
        raise ValueError(f"IDX file {path!r} declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path!r} is truncated inside its header.")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file {path!r} is {kind}: dims {dims} need {expected} bytes, "
            f"found {len(raw)}."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------- #
# Sources.


def _load_digits(*, test_fraction: float = 0.2, split_seed: int = 0) -> dict[str, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(test_fraction, bool) or not isinstance(
        test_fraction, int | float | np.integer | np.floating
    ):
        raise TypeError(f"test_fraction must be a float, got {test_fraction!r}.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int | np.integer):
        raise TypeError(f"split_seed must be an int, got {split_seed!r}.")
    if split_seed < 0:
        raise ValueError(f"split_seed must be >= 0, got {split_seed!r}.")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=float(test_fraction),
        stratify=labels,
        random_state=int(split_seed),
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return {
        "train": {"image": images[train_idx], "label": labels[train_idx]},
        "test": {"image": images[test_idx], "label": labels[test_idx]},
        "num_classes": 10,
    }


def _load_fashion_mnist(data_dir: str | os.PathLike | None) -> dict[str, Any]:
    path = os.fspath(data_dir) if data_dir is not None else DEFAULT_FASHION_MNIST_DIR
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Fashion-MNIST directory {path!r} does not exist. Fix: run "
            "`apt-get install dataset-fashion-mnist` (installs the IDX files in "
            f"{DEFAULT_FASHION_MNIST_DIR}) or pass data_dir= pointing to a "
            "directory with train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz]."
        )
    return _load_idx_dir(path)


def _prefixed_path(name: str, prefix: str) -> str:
    path = os.path.expanduser(name[len(prefix) :])
    if not path:
        raise ValueError(f"name {name!r} needs a path after {prefix!r}.")
    return path


def _idx_candidates(stem: str) -> tuple[str, ...]:
    # Also accept the "train-images.idx3-ubyte" spelling some archives unpack to.
    dotted = stem.replace("-idx", ".idx")
    return (stem, stem + ".gz", dotted, dotted + ".gz")


def _find_idx_files(path: str) -> dict[str, tuple[str, str]] | None:
    """Maps part -> (images path, labels path), or None when any file is missing."""
    if not os.path.isdir(path):
        return None
    found = {}
    for part, stems in _IDX_STEMS.items():
        files = []
        for stem in stems:
            hits = [
                os.path.join(path, c)
                for c in _idx_candidates(stem)
                if os.path.isfile(os.path.join(path, c))
            ]
            if not hits:
                return None
            files.append(hits[0])
        found[part] = tuple(files)
    return found


def _load_idx_dir(path: str) -> dict[str, Any]:
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"IDX directory {path!r} does not exist; pass an existing directory of "
            "MNIST-format IDX files."
        )
    files = _find_idx_files(path)
    if files is None:
        wanted = [s + "[.gz]" for stems in _IDX_STEMS.values() for s in stems]
        raise FileNotFoundError(
            f"IDX directory {path!r} lacks some of the files {wanted}; "
            f"it holds {sorted(os.listdir(path))}."
        )
    out: dict[str, Any] = {}
    max_label = -1
    for part, (image_path, label_path) in files.items():
        images = read_idx(image_path)
        labels = read_idx(label_path)
        if images.ndim != 3:
            raise ValueError(
                f"IDX image file {image_path!r} must be [N, H, W], got dims "
                f"{images.shape}."
            )
        if labels.ndim != 1:
            raise ValueError(
                f"IDX label file {label_path!r} must be [N], got dims {labels.shape}."
            )
        if len(images) != len(labels):
            raise ValueError(
                f"IDX files {image_path!r} and {label_path!r} disagree on N: "
                f"{len(images)} images vs {len(labels)} labels."
            )
        if not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and labels.min() < 0
        ):
            raise ValueError(
                f"IDX label file {label_path!r} must hold non-negative integers."
            )
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255.0)
        else:
            images = images.astype(np.float32)
        out[part] = {"image": images[..., None], "label": labels.astype(np.int32)}
        if labels.size:
            max_label = max(max_label, int(labels.max()))
    out["num_classes"] = max_label + 1
    return out


def _load_npz(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz file {path!r} does not exist.")
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        for style in _NPZ_KEYS:
            if set(style) <= keys:
                arrays = {k: np.asarray(npz[k]) for k in style}
                break
        else:
            raise ValueError(
                f"npz file {path!r} must contain the keys {list(_NPZ_KEYS[0])} or "
                f"{list(_NPZ_KEYS[1])}; it has {sorted(keys)}."
            )
        num_classes = np.asarray(npz["num_classes"]) if "num_classes" in keys else None
    image_train, label_train, image_test, label_test = style
    out: dict[str, Any] = {}
    max_label = -1
    for part, image_key, label_key in (
        ("train", image_train, label_train),
        ("test", image_test, label_test),
    ):
        images = _npz_images(arrays[image_key], image_key, path)
        labels = arrays[label_key]
        if labels.ndim != 1:
            raise ValueError(
                f"npz key {label_key!r} in {path!r} must be rank 1 [N], got shape "
                f"{labels.shape}."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"npz key {label_key!r} in {path!r} must hold integers, got dtype "
                f"{labels.dtype}."
            )
        if len(labels) != len(images):
            raise ValueError(
                f"npz key {label_key!r} in {path!r} has {len(labels)} labels but "
                f"{image_key!r} has {len(images)} images."
            )
        if labels.size and labels.min() < 0:
            raise ValueError(
                f"npz key {label_key!r} in {path!r} has negative labels "
                f"(min {labels.min()})."
            )
        if labels.size:
            max_label = max(max_label, int(labels.max()))
        out[part] = {"image": images, "label": labels.astype(np.int32)}
    if num_classes is not None:
        if num_classes.shape != () or not np.issubdtype(num_classes.dtype, np.integer):
            raise ValueError(
                f"npz key 'num_classes' in {path!r} must be an integer scalar."
            )
        if int(num_classes) <= max_label:
            raise ValueError(
                f"npz key 'num_classes' in {path!r} is {int(num_classes)} but a "
                f"label equals {max_label}."
            )
        out["num_classes"] = int(num_classes)
    else:
        out["num_classes"] = max_label + 1
    return out


def _npz_images(images: np.ndarray, key: str, path: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim != 4:
        raise ValueError(
            f"npz key {key!r} in {path!r} must be [N, H, W] or [N, H, W, C], got "
            f"shape {images.shape}."
        )
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer) and not np.issubdtype(
        images.dtype, np.bool_
    ):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(
                f"npz key {key!r} in {path!r} holds integers outside [0, 255]; "
                "store uint8 pixels or float images."
            )
        return images.astype(np.float32) / np.float32(255.0)
    raise ValueError(
        f"npz key {key!r} in {path!r} has dtype {images.dtype}; expected uint8 or "
        "float images."
    )


def _load_tfds(name: str, data_dir: str | os.PathLike | None) -> dict[str, Any]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"Loading dataset {name!r} needs tensorflow_datasets: "
            "pip install 'jaxunlearn[data]'. Offline alternatives: 'digits', "
            "'fashion_mnist', 'idx:PATH', 'npz:PATH'."
        ) from e
    _hide_gpus_from_tensorflow()
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    where = data_dir if data_dir is not None else "the default TFDS data_dir"
    try:
        (train, test), info = tfds.load(
            name,
            split=["train", "test"],
            batch_size=-1,
            as_supervised=True,
            data_dir=data_dir,
            download=False,
            with_info=True,
        )
    except (AssertionError, FileNotFoundError, OSError) as e:
        # TFDS signals "not prepared" with an AssertionError when download=False.
        shown = data_dir or "~/tensorflow_datasets"
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {where}. Prepare it on a "
            f"machine with network: `tfds build {name} --data_dir {shown}` (or "
            f'python -c "import tensorflow_datasets as tfds; '
            f"tfds.builder('{name}', data_dir='{shown}').download_and_prepare()\"), "
            "then copy that directory here and pass data_dir=DIR. ({e})"
        ) from e
    out: dict[str, Any] = {}
    for part, (images, labels) in (("train", train), ("test", test)):
        images, labels = tfds.as_numpy(images), tfds.as_numpy(labels)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255.0)
        else:
            images = images.astype(np.float32)
        out[part] = {"image": images, "label": np.asarray(labels).astype(np.int32)}
    try:
        out["num_classes"] = int(info.features["label"].num_classes)
    except (KeyError, AttributeError, TypeError):
        out["num_classes"] = int(
            max(out["train"]["label"].max(), out["test"]["label"].max()) + 1
        )
    return out


def _hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow (used by TFDS) from grabbing accelerator memory."""
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    except Exception:  # noqa: BLE001 - best effort; TF may be absent or initialised.
        pass


def _standardize(ds: dict[str, Any]) -> dict[str, Any]:
    train = ds["train"]["image"]
    axes = tuple(range(train.ndim - 1))
    mean = train.mean(axis=axes, dtype=np.float64)
    std = train.std(axis=axes, dtype=np.float64)
    mean = mean.astype(np.float32)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    out = dict(ds)
    for part in ("train", "test"):
        image = ((ds[part]["image"] - mean) / std).astype(np.float32)
        out[part] = {**ds[part], "image": image}
    return out
