"""Multi-round unlearning: train.forget_rounds and train.unlearn_rounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import methods, models, train

MODELS = {
    "mlp": dict(name="mlp", hidden=(16,)),
    "cnn": dict(name="cnn", widths=(8, 8)),
}


@pytest.fixture(scope="module")
def small(digits):
    """A 400-image training subset (every class) and an unseen pool."""
    tr = digits["train"]
    idx = np.random.default_rng(0).permutation(len(tr["label"]))
    pick = lambda i: {k: np.asarray(v)[i] for k, v in tr.items()}  # noqa: E731
    return pick(idx[:400]), pick(idx[400:600])


@pytest.fixture(scope="module", params=sorted(MODELS))
def net(request):
    kw = dict(MODELS[request.param])
    model = models.get_model(kw.pop("name"), 10, **kw)
    v = models.init(model, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return request.param, model, models.make_apply_fn(model), v


def test_forget_rounds_are_disjoint_and_shrink_geometrically():
    rounds = train.forget_rounds(1000, fraction=0.1, rounds=3, seed=4)
    assert [len(r) for r in rounds] == [100, 90, 81]
    allidx = np.concatenate(rounds)
    assert len(np.unique(allidx)) == len(allidx) and allidx.max() < 1000
    again = train.forget_rounds(1000, fraction=0.1, rounds=3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(rounds, again, strict=True))
    with pytest.raises(ValueError, match="fraction"):
        train.forget_rounds(100, fraction=1.5)
    with pytest.raises(ValueError, match="too small"):
        train.forget_rounds(3, fraction=0.1, rounds=2)


def test_each_round_starts_from_the_previous_rounds_weights(net, small):
    """Round 1 of unlearn_rounds == train.unlearn on round 0's output with
    round 1's data and key (MLP and BatchNorm CNN: statistics included)."""
    _, _, apply_fn, v = net
    ds, _ = small
    rounds = train.forget_rounds(len(ds["label"]), fraction=0.1, rounds=2, seed=1)
    key = jax.random.key(7)
    res = train.unlearn_rounds(
        "finetune",
        v,
        ds,
        rounds,
        apply_fn=apply_fn,
        epochs=1,
        batch_size=32,
        key=key,
        method_kwargs={"learning_rate": 0.05},
    )
    assert [r["forget_total"] for r in res.records] == [40, 76]
    assert [r["retain_size"] for r in res.records] == [360, 324]
    keep = np.ones(400, bool)
    keep[np.concatenate(rounds)] = False
    m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05)
    again = train.unlearn(
        m,
        res.round_variables[0],
        {
            "retain": {k: x[keep] for k, x in ds.items()},
            "forget": {k: x[rounds[1]] for k, x in ds.items()},
        },
        epochs=1,
        batch_size=32,
        key=jax.random.fold_in(key, 1),
    )
    for a, b in zip(
        jax.tree.leaves(again.variables), jax.tree.leaves(res.variables), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for r in res.records:
        assert r["unlearn_time"] > 0 and r["condense_time"] == 0.0
        assert r["train_size"] == r["retain_size"]


def test_condenser_sees_cumulative_forget_indices_and_is_timed_apart(small):
    ds, unseen = small
    model = models.get_model("mlp", 10, hidden=(8,))
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), ds["image"][:1])
    rounds = train.forget_rounds(400, fraction=0.1, rounds=3, seed=2)
    calls = []

    def condenser(cumulative):
        calls.append(cumulative)
        keep = np.setdiff1d(np.arange(400), cumulative)[::2]  # "condensed": half
        return {k: x[keep] for k, x in ds.items()}, {"time": 1.5, "free": 3}

    seen = []
    res = train.unlearn_rounds(
        "a_cf",
        v,
        ds,
        rounds,
        apply_fn=apply_fn,
        epochs=1,
        batch_size=16,
        key=jax.random.key(0),
        unseen_set=unseen,
        condenser=condenser,
        evaluate=lambda var, info: (
            seen.append(info) or {"n_retain_eval": len(info["retain_indices"])}
        ),
    )
    for r, c in enumerate(calls):
        np.testing.assert_array_equal(c, np.sort(np.concatenate(rounds[: r + 1])))
    for rec, info in zip(res.records, seen, strict=True):
        assert rec["condense_time"] == 1.5 and rec["free"] == 3
        assert rec["train_size"] == (400 - rec["forget_total"] + 1) // 2
        assert rec["n_retain_eval"] == 400 - rec["forget_total"]
        # the method's forget set is the current request only
        assert len(info["forget_indices"]) == rec["forget_size"]
        assert rec["history"][0]["forget_sample"] == min(64, rec["forget_size"])


# DLFD's defaults (15 sign steps, 50 Sinkhorn iterations) cost a minute of
# compilation here and test nothing more about rounds.
CHEAP = {"dlfd": {"perturb_steps": 2, "sinkhorn_iterations": 10, "monitor_size": 16}}


@pytest.mark.parametrize("name", methods.names())
def test_every_registered_method_runs_two_class_rounds(name, small):
    """Round 0 forgets class 3, round 1 class 5: every registered method
    (class-only ones get the fully forgotten classes) runs both rounds and
    ends with finite weights."""
    ds, unseen = small
    model = models.get_model("mlp", 10, hidden=(8,))
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), ds["image"][:1])
    rounds = [np.flatnonzero(ds["label"] == c) for c in (3, 5)]
    res = train.unlearn_rounds(
        name,
        v,
        ds,
        rounds,
        apply_fn=apply_fn,
        epochs=1,
        batch_size=64,
        key=jax.random.key(1),
        unseen_set=unseen,
        val_set=unseen,
        init_fn=lambda k: models.init(model, k, ds["image"][:1]),
        method_kwargs=CHEAP.get(name),
    )
    assert [r["forget_size"] for r in res.records] == [len(r) for r in rounds]
    assert [r["forget_total"] for r in res.records] == [
        len(rounds[0]),
        len(rounds[0]) + len(rounds[1]),
    ]
    for x in jax.tree.leaves(res.variables):
        assert bool(np.all(np.isfinite(x))), name


def test_bad_arguments_name_the_argument(small, net):
    ds, _ = small
    _, _, apply_fn, v = net
    kw = dict(apply_fn=apply_fn, epochs=1, batch_size=8, key=jax.random.key(0))
    with pytest.raises(ValueError, match="disjoint"):
        train.unlearn_rounds("finetune", v, ds, [np.arange(5), np.arange(3)], **kw)
    with pytest.raises(ValueError, match="outside"):
        train.unlearn_rounds("finetune", v, ds, [np.array([400])], **kw)
    with pytest.raises(TypeError, match="forget_rounds"):
        train.unlearn_rounds("finetune", v, ds, np.arange(3), **kw)
    with pytest.raises(ValueError, match="unknown method"):
        train.unlearn_rounds("finetun", v, ds, [np.arange(3)], **kw)
    with pytest.raises(ValueError, match="train_set"):
        train.unlearn_rounds(
            "finetune", v, {"image": ds["image"]}, [np.arange(3)], **kw
        )
