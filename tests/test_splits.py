"""Tests for jaxunlearn.data._splits: class, random and group unlearning splits."""

import json

import numpy as np
import pytest

from jaxunlearn.data import _sources, _splits

MODES = ("class", "random", "group")
KW = {"class": {"forget_classes": 3}, "random": {}, "group": {}}


@pytest.fixture(scope="module")
def ds():
    return _sources.load("digits")


@pytest.fixture(scope="module")
def splits(ds):
    return {mode: _splits.split(ds, mode, seed=0, **KW[mode]) for mode in MODES}


def _pool_parts(data):
    parts = ["retain", "forget", "val"]
    if data.mode == "group":
        parts.append("test")
    return parts


# --------------------------------------------------------------------------- #
# Properties shared by all modes.


@pytest.mark.parametrize("mode", MODES)
def test_disjoint_and_covering(ds, splits, mode):
    data = splits[mode]
    parts = _pool_parts(data)
    all_idx = np.concatenate([data.indices[p] for p in parts])
    assert all_idx.dtype == np.int64
    assert len(np.unique(all_idx)) == len(all_idx)  # disjoint
    np.testing.assert_array_equal(
        np.sort(all_idx), np.arange(len(ds["train"]["label"]))
    )  # covering
    for p in parts:
        assert len(data.indices[p]) > 0
        np.testing.assert_array_equal(
            getattr(data, p)["image"], ds["train"]["image"][data.indices[p]]
        )
        np.testing.assert_array_equal(
            getattr(data, p)["label"], ds["train"]["label"][data.indices[p]]
        )
        assert getattr(data, p)["label"].dtype == np.int32


@pytest.mark.parametrize("mode", MODES)
def test_deterministic(ds, splits, mode):
    again = _splits.split(ds, mode, seed=0, **KW[mode])
    assert again.hashes == splits[mode].hashes
    for key, arr in splits[mode].indices.items():
        np.testing.assert_array_equal(again.indices[key], arr)
    other = _splits.split(ds, mode, seed=1, **KW[mode])
    assert other.hashes["split"] != splits[mode].hashes["split"]
    assert other.hashes["forget"] != splits[mode].hashes["forget"] or mode == "class"
    assert other.hashes["val"] != splits[mode].hashes["val"]
    assert other.hashes["dataset"] == splits[mode].hashes["dataset"]
    assert other.seed == 1


@pytest.mark.parametrize("mode", MODES)
def test_summary_and_train(splits, mode):
    data = splits[mode]
    summary = data.summary()
    json.dumps(summary)
    assert sorted(summary["sizes"]) == ["forget", "retain", "test", "val"]
    assert summary["mode"] == mode
    assert summary["hashes"]["split"] == data.hashes["split"]
    for p in ("retain", "forget", "val", "test"):
        assert summary["sizes"][p] == len(getattr(data, p)["label"])
    train = data.train
    n_r = len(data.retain["label"])
    np.testing.assert_array_equal(train["label"][:n_r], data.retain["label"])
    np.testing.assert_array_equal(train["image"][n_r:], data.forget["image"])
    for key, value in data.hashes.items():
        assert len(value) == 64, key


def test_val_is_stratified_and_shared(ds, splits):
    labels = ds["train"]["label"]
    val_labels = splits["class"].val["label"]
    expected = 0.1 * np.bincount(labels, minlength=10)
    assert np.all(np.abs(np.bincount(val_labels, minlength=10) - expected) <= 1)
    # Same seed: class and random modes hold out the same validation set.
    np.testing.assert_array_equal(
        splits["class"].indices["val"], splits["random"].indices["val"]
    )


# --------------------------------------------------------------------------- #
# Class mode.


def test_class_mode(ds, splits):
    data = splits["class"]
    assert data.forget_classes == (3,)
    assert set(np.unique(data.forget["label"]).tolist()) == {3}
    assert 3 not in set(data.retain["label"].tolist())
    assert set(np.unique(data.retain["label"]).tolist()) == set(range(10)) - {3}
    np.testing.assert_array_equal(data.test["label"], ds["test"]["label"])
    n3 = int(np.sum(ds["train"]["label"] == 3))
    assert len(data.forget["label"]) + int(np.sum(data.val["label"] == 3)) == n3


@pytest.mark.parametrize("classes", [[2, 7, 5], (7, 2, 5, 5), np.array([5, 2, 7])])
def test_class_mode_multi(ds, classes):
    data = _splits.class_split(ds, classes, seed=3)
    assert data.forget_classes == (2, 5, 7)
    assert set(np.unique(data.forget["label"]).tolist()) == {2, 5, 7}
    assert not set(data.retain["label"].tolist()) & {2, 5, 7}
    assert data.seed == 3


def test_class_mode_hash_depends_on_classes(ds):
    a = _splits.class_split(ds, 1)
    b = _splits.class_split(ds, 2)
    assert a.hashes["split"] != b.hashes["split"]
    assert a.hashes["val"] == b.hashes["val"]


def test_zero_val_fraction(ds):
    data = _splits.class_split(ds, 0, val_fraction=0.0)
    assert len(data.val["label"]) == 0
    assert data.val["image"].shape == (0, 8, 8, 1)
    assert len(data.retain["label"]) + len(data.forget["label"]) == 1437


# --------------------------------------------------------------------------- #
# Random mode.


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37, 0.9])
def test_random_fraction(ds, fraction):
    data = _splits.random_split(ds, fraction, seed=2)
    pool = len(data.retain["label"]) + len(data.forget["label"])
    assert abs(len(data.forget["label"]) - fraction * pool) <= 1
    assert data.forget_classes == ()


# --------------------------------------------------------------------------- #
# Group mode.


def _group_of_each_index(data):
    groups = {}
    for p in ("retain", "forget", "val", "test"):
        for i, g in zip(data.indices[p], data.indices[f"group_{p}"], strict=True):
            groups[int(i)] = (int(g), p)
    return groups


def test_group_mode_groups_never_straddle(ds, splits):
    data = splits["group"]
    part_of_group = {}
    for g, p in _group_of_each_index(data).values():
        assert part_of_group.setdefault(g, p) == p
    group_sets = [set(data.indices[f"group_{p}"].tolist()) for p in _splits._PARTS]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not group_sets[i] & group_sets[j]
    # Every group lies inside one class.
    labels = ds["train"]["label"]
    for p in _splits._PARTS:
        for g in np.unique(data.indices[f"group_{p}"]):
            members = data.indices[p][data.indices[f"group_{p}"] == g]
            assert len(np.unique(labels[members])) == 1
    counts = data.summary()["num_groups"]
    assert counts == {"retain": 60, "forget": 10, "val": 10, "test": 20}
    # The stratified deal spreads every part over all classes.
    for p in _splits._PARTS:
        assert set(np.unique(getattr(data, p)["label"]).tolist()) == set(range(10))


def test_group_mode_features_and_small(ds):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(len(ds["train"]["label"]), 5))
    data = _splits.split(ds, "group", features=feats, groups_per_class=2, seed=4)
    counts = data.summary()["num_groups"]
    assert counts["forget"] == 2 and counts["test"] == 4 and counts["val"] == 2
    assert sum(counts.values()) == 20
    assert (
        data.hashes["split"]
        != _splits.group_split(ds, groups_per_class=2, seed=4).hashes["split"]
    )
    # Even a tiny forget fraction keeps at least one group per part.
    tiny = _splits.group_split(
        ds, forget_fraction=0.001, unseen_fraction=0.001, groups_per_class=1
    )
    assert tiny.summary()["num_groups"]["forget"] == 1
    assert tiny.summary()["num_groups"]["test"] == 1


# --------------------------------------------------------------------------- #
# Errors.


def _with_train(ds, **train):
    return {**ds, "train": {**ds["train"], **train}}


def test_errors_forget_classes(ds):
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.class_split(ds, 10)
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.class_split(ds, -1)
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.class_split(ds, list(range(10)))
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.class_split(ds, [])
    keep = ds["train"]["label"] != 9
    no_nine = _with_train(
        ds, image=ds["train"]["image"][keep], label=ds["train"]["label"][keep]
    )
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.class_split(no_nine, 9)
    with pytest.raises(TypeError, match="forget_classes"):
        _splits.class_split(ds, 3.0)
    with pytest.raises(TypeError, match="forget_classes"):
        _splits.class_split(ds, [1, 2.5])
    with pytest.raises(TypeError, match="forget_classes"):
        _splits.class_split(ds, "3")
    with pytest.raises(TypeError, match="forget_classes"):
        _splits.class_split(ds, True)
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.split(ds, "class")
    with pytest.raises(ValueError, match="forget_classes"):
        _splits.split(ds, "random", forget_classes=1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_errors_fraction_range(ds, fraction):
    with pytest.raises(ValueError, match="forget_fraction"):
        _splits.random_split(ds, fraction)
    with pytest.raises(ValueError, match="forget_fraction"):
        _splits.group_split(ds, forget_fraction=fraction)


def test_errors_fractions_other(ds):
    with pytest.raises(ValueError, match="forget_fraction"):
        _splits.random_split(ds, 1e-6)  # empty forget set
    with pytest.raises(TypeError, match="forget_fraction"):
        _splits.random_split(ds, "0.1")
    with pytest.raises(ValueError, match="val_fraction"):
        _splits.random_split(ds, 0.1, val_fraction=1.0)
    with pytest.raises(ValueError, match="unseen_fraction"):
        _splits.group_split(ds, unseen_fraction=0.0)
    with pytest.raises(ValueError, match="retain"):
        _splits.group_split(ds, forget_fraction=0.5, unseen_fraction=0.5)
    with pytest.raises(ValueError, match="groups_per_class"):
        _splits.group_split(ds, groups_per_class=0)
    with pytest.raises(TypeError, match="groups_per_class"):
        _splits.group_split(ds, groups_per_class=2.0)


def test_errors_labels_and_lengths(ds):
    bad = ds["train"]["label"].copy()
    bad[0] = 10
    with pytest.raises(ValueError, match="label"):
        _splits.random_split(_with_train(ds, label=bad), 0.1)
    bad[0] = -1
    with pytest.raises(ValueError, match="label"):
        _splits.class_split(_with_train(ds, label=bad), 1)
    with pytest.raises(ValueError, match="label"):
        _splits.split(_with_train(ds, label=ds["train"]["label"][:-1]), "random")
    with pytest.raises(TypeError, match="label"):
        _splits.random_split(
            _with_train(ds, label=ds["train"]["label"].astype(float)), 0.1
        )
    with pytest.raises(ValueError, match="features"):
        _splits.group_split(ds, features=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="features"):
        _splits.split(ds, "random", features=np.zeros((5, 3)))


def test_errors_mode_and_seed(ds):
    with pytest.raises(ValueError) as err:
        _splits.split(ds, "classes")
    for mode in MODES:
        assert mode in str(err.value)
    with pytest.raises(TypeError, match="mode"):
        _splits.split(ds, 1)
    with pytest.raises(TypeError, match="seed"):
        _splits.random_split(ds, 0.1, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        _splits.random_split(ds, 0.1, seed=-1)
