"""A masked batch slot influences nothing, BatchNorm statistics included.

Every test runs on an MLP AND a BatchNorm CNN: the MLP has no batch statistics,
so it alone would never have shown the leak these tests guard against
(padded slots entering BatchNorm's train-mode mean / variance and its running
averages).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train
from jaxunlearn.methods._common import batch_ce

MODELS = {
    "mlp": {"hidden": (16,)},
    "cnn": {"widths": (4, 8)},
}


def _tree_max_diff(a, b):
    return (
        max(
            float(
                jnp.max(
                    jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))
                )
            )
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )
        if jax.tree.leaves(a)
        else 0.0
    )


def _bitwise_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


@pytest.fixture(scope="module")
def pool():
    ds = data.load("digits")
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(ds["train"]["label"]), 150, replace=False))
    return {k: np.asarray(v[idx]) for k, v in ds["train"].items()}


def _setup(name, example):
    model = models.get_model(name, 10, **MODELS[name])
    v = models.init(model, jax.random.key(0), example)
    return model, models.make_apply_fn(model), v


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padded_batch_equals_unpadded_loss_grads_and_batch_stats(pool, name):
    model, apply_fn, v = _setup(name, pool["image"][:1])
    real = {
        "image": jnp.asarray(pool["image"][:5]),
        "label": jnp.asarray(pool["label"][:5]),
    }
    noise = np.random.default_rng(1).normal(0, 50, size=(3, *pool["image"].shape[1:]))
    padded = {
        "image": jnp.concatenate([real["image"], jnp.asarray(noise, jnp.float32)]),
        "label": jnp.concatenate([real["label"], jnp.asarray([1, 2, 3])]),
        "mask": jnp.arange(8) < 5,
    }
    real["mask"] = jnp.ones(5, bool)

    def loss_grads(part):
        def f(p):
            loss, new_v, _ = batch_ce(apply_fn, {**v, "params": p}, part, None)
            return loss, new_v

        (loss, new_v), g = jax.jit(jax.value_and_grad(f, has_aux=True))(v["params"])
        return loss, g, new_v

    l_real, g_real, v_real = loss_grads(real)
    l_pad, g_pad, v_pad = loss_grads(padded)
    np.testing.assert_allclose(l_pad, l_real, rtol=1e-5, atol=1e-6)
    assert _tree_max_diff(g_pad, g_real) < 1e-5
    if "batch_stats" in v:
        assert _tree_max_diff(v_pad["batch_stats"], v_real["batch_stats"]) < 1e-5
        # Without the mask the padded slots move the running averages: what
        # the old code did, and what this test would catch.
        _, leaky = apply_fn(v, padded["image"], train=True)
        assert _tree_max_diff(leaky["batch_stats"], v_real["batch_stats"]) > 1e-2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mask_reaches_every_batchnorm_under_vmap(pool, name):
    """The mask is threaded per replica: vmapped forward == per-replica forward."""
    _, apply_fn, v = _setup(name, pool["image"][:1])
    x = jnp.asarray(pool["image"][:12]).reshape(2, 6, *pool["image"].shape[1:])
    m = jnp.array([[True] * 4 + [False] * 2, [True] * 6])

    def f(xx, mm):
        logits, new = apply_fn(v, xx, train=True, mask=mm)
        return logits, new.get("batch_stats", {})

    stacked_logits, stacked = jax.vmap(f)(x, m)
    for r in range(2):
        n = int(m[r].sum())
        logits, one = f(x[r][:n], jnp.ones(n, bool))
        got = jax.tree.map(lambda a, r=r: a[r], stacked)
        assert _tree_max_diff(got, one) < 1e-5
        np.testing.assert_allclose(stacked_logits[r][:n], logits, rtol=1e-4, atol=1e-5)


def test_mask_argument_is_validated(pool):
    _, apply_fn, v = _setup("cnn", pool["image"][:1])
    x = jnp.asarray(pool["image"][:4])
    with pytest.raises(ValueError, match="mask"):
        apply_fn(v, x, train=True, mask=jnp.ones(3, bool))
    with pytest.raises(TypeError, match="mask"):
        apply_fn(v, x, train=True, mask=jnp.ones(4, jnp.int32))


def _noisy_outside(pool, include):
    """``pool`` with the pixels of every excluded example replaced by noise."""
    img = pool["image"].copy()
    noise = np.random.default_rng(7).normal(3.0, 10.0, size=img.shape)
    img[~include] = noise[~include].astype(img.dtype)
    return {**pool, "image": img}


def _include(pool):
    inc = np.random.default_rng(3).random(len(pool["label"])) < 0.6
    inc[:3] = [False, True, False]  # example 0 excluded, so padding can hit it
    return inc


CFG = train.TrainConfig(epochs=2, batch_size=32, learning_rate=0.05)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_models_ignores_excluded_pixels_bitwise(pool, name):
    model = models.get_model(name, 10, **MODELS[name])
    one = _include(pool)
    inc = np.stack([one, one])  # two seeds, same members: padding = excluded
    a = train.train_models(model, pool, CFG, inclusion=inc, seed=0, keep_variables=True)
    noisy = _noisy_outside(pool, one)
    b = train.train_models(
        model, noisy, CFG, inclusion=inc, seed=0, keep_variables=True
    )
    assert _bitwise_equal(a.variables, b.variables)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_and_unlearn_with_include_ignore_excluded_pixels_bitwise(pool, name):
    model, apply_fn, v = _setup(name, pool["image"][:1])
    inc = _include(pool)
    noisy = _noisy_outside(pool, inc)
    fa = train.fit(model, v, pool, CFG, key=jax.random.key(1), include=inc)
    fb = train.fit(model, v, noisy, CFG, key=jax.random.key(1), include=inc)
    assert _bitwise_equal(fa.variables, fb.variables)
    # include= trains on the included examples only: a different model from
    # training on everything.
    full = train.fit(model, v, pool, CFG, key=jax.random.key(1))
    assert not _bitwise_equal(fa.variables, full.variables)

    m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05)
    ua = train.unlearn(
        m,
        v,
        {"retain": pool},
        epochs=2,
        batch_size=32,
        key=jax.random.key(2),
        include=inc,
    )
    ub = train.unlearn(
        m,
        v,
        {"retain": noisy},
        epochs=2,
        batch_size=32,
        key=jax.random.key(2),
        include=inc,
    )
    assert _bitwise_equal(ua.variables, ub.variables)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_retrain_ignores_forget_pixels_bitwise(pool, name):
    model = models.get_model(name, 10, **MODELS[name])
    ds = {"train": pool, "test": pool, "num_classes": 10}
    split = data.split(ds, "class", forget_classes=3, seed=0)
    noisy_forget = {
        **split.forget,
        "image": np.random.default_rng(5)
        .normal(0, 9, size=split.forget["image"].shape)
        .astype(np.float32),
    }
    noisy = dataclasses.replace(split, forget=noisy_forget)
    a, _ = train.retrain(model, split, CFG, seed=0)
    b, _ = train.retrain(model, noisy, CFG, seed=0)
    assert _bitwise_equal(a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trailing_empty_batches_are_no_ops(pool, name):
    """A subset smaller than the plan ends in all-masked batches: they change
    nothing (no momentum, no weight decay, no BatchNorm update)."""
    model, apply_fn, v = _setup(name, pool["image"][:1])
    m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05)
    state = m.init(v)
    part = {
        "image": jnp.asarray(pool["image"][:8]),
        "label": jnp.asarray(pool["label"][:8]),
        "mask": jnp.zeros(8, bool),
        "index": jnp.arange(8),
    }
    # one real step first so momentum is non-zero
    live = {**part, "mask": jnp.ones(8, bool)}
    state, _ = jax.jit(m.step)(state, {"retain": live}, jax.random.key(0))
    after, metrics = jax.jit(m.step)(state, {"retain": part}, jax.random.key(1))
    assert _bitwise_equal(after, state)
    assert float(metrics["loss"]) == 0.0
