"""train.sweep: vmapped hyperparameter sweeps selected against retraining."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train
from jaxunlearn.train._sweep import TERMS

MODELS = {
    "mlp": dict(name="mlp", hidden=(16,)),
    "cnn": dict(name="cnn", widths=(8, 8)),
}


@pytest.fixture(scope="module")
def split(digits):
    """A small class split of digits (train pool subsampled to 300)."""
    small = {
        "train": data.subsample(digits["train"], 300, 0),
        "test": data.subsample(digits["test"], 100, 0),
    }
    return data.split(small, "class", forget_classes=3, seed=0)


@pytest.fixture(scope="module", params=sorted(MODELS))
def net(request, split):
    kw = dict(MODELS[request.param])
    model = models.get_model(kw.pop("name"), 10, **kw)
    apply_fn = models.make_apply_fn(model)
    orig = models.init(model, jax.random.key(0), split.retain["image"][:1])
    retr = models.init(model, jax.random.key(1), split.retain["image"][:1])
    return request.param, apply_fn, orig, retr


def _sweep(net, split, grid, **kw):
    _, apply_fn, orig, retr = net
    m = methods.get("neggrad_plus", apply_fn=apply_fn, learning_rate=0.01)
    args = dict(
        variables=orig,
        retrained=retr,
        apply_fn=apply_fn,
        epochs=1,
        batch_size=32,
        key=jax.random.key(3),
    )
    args.update(kw)
    return m, train.sweep(m, grid, split, **args)


def _close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol)


def test_every_point_equals_a_single_run_and_scores_follow_the_rule(net, split):
    """Each point of the vmapped sweep is train.unlearn with that point's
    hparams and the same key (MLP and BatchNorm CNN: statistics included); the
    metrics are the host-computed accuracies / attack, the score the rule's
    weighted gap to the retrained model."""
    _, apply_fn, orig, retr = net
    grid = {"learning_rate": [0.003, 0.03], "retain_weight": [0.5, 0.9]}
    rule = train.SelectionRule(
        weights={"retain": 1.0, "forget": 2.0, "heldout": 0.5, "privacy": 3.0},
        max_retain=0,
    )
    m, res = _sweep(net, split, grid, select=rule)
    assert len(res.points) == 4 and res.chunks == 1
    single = train.unlearn(
        m, orig, split, epochs=1, batch_size=32, key=jax.random.key(3),
        hparams=res.best,
    )  # fmt: skip
    _close(res.variables, jax.device_get(single.variables), 2e-5)

    def acc(v, part):
        logits = train.predict(apply_fn, v, part["image"])
        return float(np.mean(logits.argmax(-1) == part["label"]))

    best = res.metrics[res.best_index]
    assert best["retain"] == pytest.approx(acc(res.variables, split.retain), abs=1e-6)
    assert best["forget"] == pytest.approx(acc(res.variables, split.forget), abs=1e-6)
    assert best["heldout"] == pytest.approx(acc(res.variables, split.val), abs=1e-6)
    assert res.reference["retain"] == pytest.approx(acc(retr, split.retain), abs=1e-6)
    for met, score in zip(res.metrics, res.scores, strict=True):
        want = sum(w * abs(met[t] - res.reference[t]) for t, w in rule.weights.items())
        assert score == pytest.approx(want, abs=1e-6)
    assert res.best_index == int(np.argmin(res.scores))
    assert 0.0 <= best["privacy"] <= 1.0


def test_zero_rate_against_itself_scores_exactly_zero_and_wins(mlp, split):
    """Known answer: with retrained = original, the learning-rate-0 point
    leaves the model unchanged, so every gap is 0 and it is selected. (MLP
    only: a BatchNorm model's running statistics move even at rate 0.)"""
    _, _, orig, _ = mlp
    m, res = _sweep(mlp, split, {"learning_rate": [0.05, 0.0, 0.02]}, retrained=orig)
    assert res.scores[1] == 0.0 and res.best_index == 1
    assert all(s > 0 for i, s in enumerate(res.scores) if i != 1)
    _close(res.variables, orig, 0.0)


@pytest.fixture(scope="module")
def mlp(split):
    model = models.get_model("mlp", 10, hidden=(16,))
    x = split.retain["image"][:1]
    v0 = models.init(model, jax.random.key(0), x)
    v1 = models.init(model, jax.random.key(1), x)
    return "mlp", models.make_apply_fn(model), v0, v1


GRID = {"learning_rate": [1e9, 0.001, 0.01, 0.03, 0.1]}


@pytest.fixture(scope="module")
def whole(mlp, split):
    """The reference sweep: one chunk, point 0 diverges."""
    return _sweep(mlp, split, GRID)[1]


def test_chunks_pad_without_changing_results(mlp, split, whole):
    _, chunked = _sweep(mlp, split, GRID, chunk_size=2)
    assert (whole.chunks, chunked.chunks, chunked.chunk_size) == (1, 3, 2)
    np.testing.assert_allclose(chunked.scores, whole.scores, atol=1e-6)
    assert chunked.best == whole.best


def test_replica_mesh_shards_points_with_the_same_result(mlp, split, whole):
    _, sharded = _sweep(mlp, split, GRID, mesh=train.make_mesh(4, axis="replica"))
    assert sharded.chunk_size == 8  # 5 points padded to a multiple of 4 devices
    np.testing.assert_allclose(sharded.scores, whole.scores, atol=1e-5)
    assert sharded.best == whole.best


def test_diverged_points_score_inf_and_never_win(mlp, split, whole):
    assert math.isinf(whole.scores[0]) and whole.best_index != 0
    out = json.loads(json.dumps(whole.to_json()))
    assert out["points"][0]["diverged"] and out["points"][0]["score"] is None
    assert out["best"] == whole.best and out["grid"] == GRID
    assert out["rule"]["formula"].startswith("min ")
    assert set(out["reference"]) == set(TERMS)
    lr = whole.best["learning_rate"]
    edge = lr in (min(GRID["learning_rate"]), max(GRID["learning_rate"]))
    assert out["best_on_grid_edge"] == (["learning_rate"] if edge else [])
    with pytest.raises(FloatingPointError, match="diverged"):
        _sweep(mlp, split, {"learning_rate": [1e9]})


@pytest.mark.parametrize(
    "grid, kw, err, match",
    [
        ({"nope": [1.0]}, {}, ValueError, "sweepable"),
        ({}, {}, ValueError, "non-empty"),
        ({"learning_rate": []}, {}, ValueError, "empty"),
        ({"learning_rate": "0.1"}, {}, TypeError, "list of numbers"),
        ({"learning_rate": [float("nan")]}, {}, ValueError, "non-finite"),
        ({"learning_rate": [0.1]}, {"epochs": 0}, ValueError, "epochs"),
        ({"learning_rate": [0.1]}, {"chunk_size": 0}, ValueError, "chunk_size"),
        ({"learning_rate": [0.1]}, {"select": "min"}, TypeError, "SelectionRule"),
        ({"learning_rate": [0.1]}, {"retrained": {}}, ValueError, "retrained"),
    ],
)
def test_bad_input_is_named_before_anything_trains(mlp, split, grid, kw, err, match):
    with pytest.raises(err, match=match):
        _sweep(mlp, split, grid, **kw)


def test_on_edge_names_axes_whose_winner_is_an_extreme():
    res = train.SweepResult(
        rule=train.SelectionRule(),
        grid={"a": [1.0, 2.0, 3.0], "b": [5.0], "c": [0.1, 0.2]},
        points=[{"a": 3.0, "b": 5.0, "c": 0.1}, {"a": 2.0, "b": 5.0, "c": 0.2}],
        metrics=[{}, {}], scores=[0.1, 0.2], reference={}, best_index=0,
        compile_time=0.0, run_time=0.0, chunks=1, chunk_size=2,
    )  # fmt: skip
    assert res.on_edge == ["a", "c"]  # b has a single value: no edge
    assert dataclasses.replace(res, best_index=1).on_edge == ["c"]


def test_selection_rule_validates_and_describes_itself():
    with pytest.raises(ValueError, match="unknown terms"):
        train.SelectionRule(weights={"test": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        train.SelectionRule(weights={"forget": -1.0})
    with pytest.raises(ValueError, match="all 0"):
        train.SelectionRule(weights={"forget": 0.0})
    rule = train.SelectionRule()
    assert rule.describe().count("|") == 8
    assert train.grid_points({"a": [1, 2], "b": [3]}) == [
        {"a": 1.0, "b": 3.0},
        {"a": 2.0, "b": 3.0},
    ]


def test_selection_defaults_to_the_val_split_never_test(mlp, split, whole):
    """The held-out term is measured on ``split.val``: a garbage test set
    changes nothing, while passing the test set as the selection split does."""
    res = whole
    junk_test = {
        "image": np.full_like(split.test["image"], 7.0),
        "label": np.zeros_like(split.test["label"]),
    }
    junk = dataclasses.replace(split, test=junk_test)
    _, res2 = _sweep(mlp, junk, GRID)
    assert res2.scores == res.scores and res2.metrics == res.metrics
    _, res3 = _sweep(
        mlp,
        split,
        GRID,
        selection={"retain": split.retain, "forget": split.forget,
                   "heldout": junk_test},
    )  # fmt: skip
    assert res3.metrics[1]["heldout"] != res.metrics[1]["heldout"]


def test_every_registered_method_names_its_sweepable_hparams(mlp, split):
    """``sweepable`` traces init abstractly with the context ``unlearn`` gives
    (key, run length): it works for every method, and every method trained by
    gradient steps can sweep its learning rate."""
    from jaxunlearn.harness._compare import _build_method

    _, _, orig, _ = mlp
    model = models.get_model("mlp", 10, hidden=(16,))
    one_shot = {"svd", "ssd", "fisher", "retrain"}
    for name in methods.names():
        if name == "retrain":
            continue
        names = train.sweepable(_build_method(name, {}, split, model), orig)
        assert ("learning_rate" in names) == (name not in one_shot), (name, names)
