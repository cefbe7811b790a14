"""Tests for jaxunlearn.data._sources: digits, IDX, npz, Fashion-MNIST, TFDS errors."""

import gzip
import os
import struct
import sys

import numpy as np
import pytest

from jaxunlearn.data import _sources

FASHION_DIR = _sources.DEFAULT_FASHION_MNIST_DIR


def _idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = struct.pack(">HBB", 0, codes[arr.dtype], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data: bytes, compress: bool) -> None:
    if compress:
        data = gzip.compress(data)
        path = str(path) + ".gz"
    with open(path, "wb") as f:
        f.write(data)


def _make_idx_dir(root, compress, rng, n_train=12, n_test=5, hw=(4, 3), k=4):
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
        labels = rng.integers(0, k, size=(n,), dtype=np.uint8)
        labels[0] = k - 1
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), compress)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), compress)
        arrays[prefix] = (images, labels)
    return arrays


# --------------------------------------------------------------------------- #
# Names and digits.


def test_names():
    assert _sources.names() == ("digits", "fashion_mnist")


def test_digits_shapes_dtypes_range():
    ds = _sources.load("digits")
    assert set(ds) == {"train", "test", "num_classes"}
    assert ds["num_classes"] == 10
    tr, te = ds["train"], ds["test"]
    assert tr["image"].shape == (1437, 8, 8, 1)
    assert te["image"].shape == (360, 8, 8, 1)
    for part in (tr, te):
        assert part["image"].dtype == np.float32
        assert part["label"].dtype == np.int32
        assert part["image"].min() >= 0.0 and part["image"].max() <= 1.0
        assert part["image"].max() == 1.0
        assert set(np.unique(part["label"]).tolist()) == set(range(10))


def test_digits_stratified():
    ds = _sources.load("digits")
    train_counts = np.bincount(ds["train"]["label"], minlength=10)
    test_counts = np.bincount(ds["test"]["label"], minlength=10)
    totals = train_counts + test_counts
    assert totals.sum() == 1797
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1.0)


def test_digits_deterministic_and_seeded():
    a, b = _sources.load("digits"), _sources.load("digits")
    for part in ("train", "test"):
        for key in ("image", "label"):
            np.testing.assert_array_equal(a[part][key], b[part][key])
    c = _sources.load("digits", split_seed=1)
    assert not np.array_equal(a["test"]["label"], c["test"]["label"])
    d = _sources.load("digits", test_fraction=0.5)
    assert abs(len(d["test"]["label"]) - 1797 / 2) <= 1


def test_digits_bad_options():
    with pytest.raises(ValueError, match="test_fraction"):
        _sources.load("digits", test_fraction=1.5)
    with pytest.raises(TypeError, match="split_seed"):
        _sources.load("digits", split_seed=0.5)
    with pytest.raises(TypeError):
        _sources.load("digits", bogus=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        _sources.load("npz:/nonexistent.npz", test_fraction=0.1)
    with pytest.raises(TypeError, match="name"):
        _sources.load(3)


def test_standardize():
    ds = _sources.load("digits", standardize=True)
    img = ds["train"]["image"].astype(np.float64)
    assert ds["train"]["image"].dtype == np.float32
    np.testing.assert_allclose(img.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(img.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    # Test images use the train statistics.
    raw = _sources.load("digits")
    mean = raw["train"]["image"].astype(np.float64).mean()
    std = raw["train"]["image"].astype(np.float64).std()
    np.testing.assert_allclose(
        ds["test"]["image"], (raw["test"]["image"] - mean) / std, atol=1e-5
    )


def test_dataset_fingerprint():
    ds = _sources.load("digits")
    fp = _sources.dataset_fingerprint(ds)
    assert len(fp) == 64 and fp == _sources.dataset_fingerprint(_sources.load("digits"))
    changed = {**ds, "train": {**ds["train"], "label": ds["train"]["label"].copy()}}
    changed["train"]["label"][0] += 1
    assert _sources.dataset_fingerprint(changed) != fp
    with pytest.raises(ValueError, match="test"):
        _sources.dataset_fingerprint({"train": ds["train"]})


# --------------------------------------------------------------------------- #
# IDX.


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    arrays = _make_idx_dir(tmp_path, compress, np.random.default_rng(0))
    ds = _sources.load(f"idx:{tmp_path}")
    assert ds["num_classes"] == 4
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[prefix]
        assert ds[part]["image"].shape == (*images.shape, 1)
        assert ds[part]["image"].dtype == np.float32
        assert ds[part]["label"].dtype == np.int32
        np.testing.assert_array_equal(
            ds[part]["image"][..., 0], images.astype(np.float32) / 255.0
        )
        np.testing.assert_array_equal(ds[part]["label"], labels)


def test_idx_dotted_names_and_mnist_data_dir(tmp_path):
    arrays = _make_idx_dir(tmp_path, False, np.random.default_rng(1))
    for name in os.listdir(tmp_path):
        os.rename(tmp_path / name, tmp_path / name.replace("-idx", ".idx"))
    ds = _sources.load("mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(ds["train"]["label"], arrays["train"][1])


def test_read_idx_other_dtype(tmp_path):
    arr = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "x-idx2-int"
    _write(path, _idx_bytes(arr), compress=False)
    out = _sources.read_idx(path)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.int32


def test_idx_truncated_raw(tmp_path):
    _make_idx_dir(tmp_path, False, np.random.default_rng(0))
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(ValueError, match="truncated") as err:
        _sources.load(f"idx:{tmp_path}")
    assert str(path) in str(err.value)
    path.write_bytes(data[:6])
    with pytest.raises(ValueError, match="truncated"):
        _sources.read_idx(path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="longer"):
        _sources.read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    _make_idx_dir(tmp_path, True, np.random.default_rng(0))
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="gzip") as err:
        _sources.load(f"idx:{tmp_path}")
    assert str(path) in str(err.value)


def test_idx_corrupt_magic(tmp_path):
    _make_idx_dir(tmp_path, False, np.random.default_rng(0))
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x01\x02" + path.read_bytes()[2:])
    with pytest.raises(ValueError, match="magic") as err:
        _sources.load(f"idx:{tmp_path}")
    assert str(path) in str(err.value)
    path.write_bytes(b"\x00\x00\x42\x01" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match="type code"):
        _sources.read_idx(path)


def test_idx_mismatched_counts(tmp_path):
    rng = np.random.default_rng(0)
    _make_idx_dir(tmp_path, False, rng)
    labels = rng.integers(0, 4, size=(7,), dtype=np.uint8)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(labels), False)
    with pytest.raises(ValueError, match="disagree on N"):
        _sources.load(f"idx:{tmp_path}")


def test_idx_missing_files(tmp_path):
    _make_idx_dir(tmp_path, False, np.random.default_rng(0))
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        _sources.load(f"idx:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _sources.load(f"idx:{tmp_path / 'nope'}")


# --------------------------------------------------------------------------- #
# npz.


@pytest.mark.parametrize(
    "keys",
    [
        ("image_train", "label_train", "image_test", "label_test"),
        ("x_train", "y_train", "x_test", "y_test"),
    ],
)
def test_npz_round_trip_uint8_rank3(tmp_path, keys):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, size=(10, 5, 5), dtype=np.uint8)
    ytr = rng.integers(0, 3, size=(10,)).astype(np.int64)
    xte = rng.integers(0, 256, size=(4, 5, 5), dtype=np.uint8)
    yte = np.array([0, 1, 2, 2])
    path = tmp_path / "d.npz"
    np.savez(path, **dict(zip(keys, (xtr, ytr, xte, yte), strict=True)))
    ds = _sources.load(f"npz:{path}")
    assert ds["num_classes"] == 3
    assert ds["train"]["image"].shape == (10, 5, 5, 1)
    assert ds["train"]["image"].dtype == np.float32
    assert ds["train"]["label"].dtype == np.int32
    np.testing.assert_array_equal(ds["train"]["image"][..., 0], xtr / np.float32(255))
    np.testing.assert_array_equal(ds["test"]["label"], yte)


def test_npz_float_rank4_and_num_classes(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.normal(size=(6, 3, 3, 2))
    xte = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=xtr,
        y_train=np.array([0, 1, 0, 1, 0, 1]),
        x_test=xte,
        y_test=np.array([1, 0]),
        num_classes=np.array(5),
    )
    ds = _sources.load(f"npz:{path}", standardize=False)
    assert ds["num_classes"] == 5
    assert ds["train"]["image"].dtype == np.float32
    np.testing.assert_allclose(ds["train"]["image"], xtr.astype(np.float32))
    np.testing.assert_array_equal(ds["test"]["image"], xte)


def test_npz_errors(tmp_path):
    good = {
        "image_train": np.zeros((4, 2, 2), np.uint8),
        "label_train": np.array([0, 1, 0, 1]),
        "image_test": np.zeros((2, 2, 2), np.uint8),
        "label_test": np.array([0, 1]),
    }
    path = tmp_path / "d.npz"

    np.savez(path, **{**good, "label_train": np.array([0, 1, 0])})
    with pytest.raises(ValueError, match="label_train"):
        _sources.load(f"npz:{path}")
    np.savez(path, **{**good, "label_test": np.array([0, -1])})
    with pytest.raises(ValueError, match="label_test"):
        _sources.load(f"npz:{path}")
    np.savez(path, **{**good, "label_test": np.array([0.0, 1.0])})
    with pytest.raises(ValueError, match="label_test"):
        _sources.load(f"npz:{path}")
    np.savez(path, **{**good, "image_test": np.zeros((2, 4), np.uint8)})
    with pytest.raises(ValueError, match="image_test"):
        _sources.load(f"npz:{path}")
    np.savez(path, x_train=good["image_train"])
    with pytest.raises(ValueError, match="x_train"):
        _sources.load(f"npz:{path}")
    with pytest.raises(FileNotFoundError):
        _sources.load(f"npz:{tmp_path / 'missing.npz'}")


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(
        path,
        image_train=np.array([object()] * 2, dtype=object),
        label_train=np.array([0, 1]),
        image_test=np.zeros((1, 2, 2)),
        label_test=np.array([0]),
    )
    with pytest.raises(ValueError):
        _sources.load(f"npz:{path}")


# --------------------------------------------------------------------------- #
# Fashion-MNIST, unknown names, TFDS.


def test_fashion_mnist_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        _sources.load("fashion_mnist", data_dir=tmp_path / "nope")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data_dir=" in msg


def test_fashion_mnist_real():
    # Installed by `make` via the Debian package dataset-fashion-mnist.
    ds = _sources.load("fashion_mnist")
    assert ds["num_classes"] == 10
    assert ds["train"]["image"].shape == (60000, 28, 28, 1)
    assert ds["test"]["image"].shape == (10000, 28, 28, 1)
    assert ds["train"]["image"].dtype == np.float32
    assert ds["train"]["label"].dtype == np.int32
    assert 0.0 <= ds["test"]["image"].min() and ds["test"]["image"].max() <= 1.0
    np.testing.assert_array_equal(np.bincount(ds["train"]["label"]), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds["test"]["label"]), [1000] * 10)
    np.testing.assert_array_equal(ds["train"]["label"][:5], [9, 0, 0, 3, 0])
    assert any(
        f.endswith("idx3-ubyte.gz") or f.endswith("idx3-ubyte")
        for f in os.listdir(FASHION_DIR)
    )


def test_unknown_name_lists_options():
    with pytest.raises(ValueError) as err:
        _sources.load("no_such_dataset")
    msg = str(err.value)
    for option in ("digits", "fashion_mnist", "idx:", "npz:", "tfds:"):
        assert option in msg


@pytest.mark.parametrize("name", ["tfds:cifar10", "cifar10"])
def test_tfds_without_package(monkeypatch, name):
    # A None entry makes `import tensorflow_datasets` raise ImportError even if
    # the package happens to be installed.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"jaxunlearn\[data\]"):
        _sources.load(name)


def test_no_tensorflow_imported_at_module_import():
    src = open(_sources.__file__).read()
    top_level = [
        line for line in src.splitlines() if line.startswith(("import ", "from "))
    ]
    assert not any("tensorflow" in line for line in top_level)
