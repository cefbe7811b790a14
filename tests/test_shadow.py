"""Vectorised model ensembles: shadow models, replicas, caching, sharding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train
from jaxunlearn import eval as eval_lib

CFG = train.TrainConfig(epochs=2, batch_size=32, learning_rate=0.05)


@pytest.fixture(scope="module")
def pool(digits):
    return {k: v[:160] for k, v in digits["train"].items()}


def _model():
    return models.get_model("mlp", 10, hidden=(16,))


def test_vmapped_shadow_training_equals_per_model_training(pool):
    model = _model()
    inclusion = np.random.default_rng(0).random((3, 160)) < 0.5
    r = train.train_models(
        model, pool, CFG, inclusion=inclusion, seed=7, keep_variables=True
    )
    assert r.logits["train"].shape == (3, 160, 10)
    # Per-model training: the same (un-vmapped) epoch, same keys and mask.
    apply_fn = models.make_apply_fn(model)
    steps = data.num_batches(int(inclusion.sum(1).max()), CFG.batch_size)
    method = methods.finetune(apply_fn, tx=CFG.tx(steps))
    runner = train.EpochRunner(
        method, {"retain": 160}, CFG.batch_size, driver_steps=steps
    )
    arrays = {
        "retain": {
            "image": jnp.asarray(pool["image"]),
            "label": jnp.asarray(pool["label"]),
        }
    }
    epoch = jax.jit(runner._epoch)
    base = jax.random.key(7)
    for k in range(3):
        key = jax.random.fold_in(base, k)
        v = models.init(model, jax.random.fold_in(key, 0), pool["image"][:1])
        state = method.init(v)
        for e in range(CFG.epochs):
            state, _ = epoch(
                state, arrays, jax.random.fold_in(key, e + 1), jnp.asarray(inclusion[k])
            )
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, k=k: x[k], r.variables),
            state.variables,
            rtol=1e-5,
            atol=1e-6,
        )
        logits = np.asarray(apply_fn(state.variables, pool["image"])[0])
        np.testing.assert_allclose(r.logits["train"][k], logits, rtol=1e-4, atol=1e-5)


def test_models_only_see_their_subset(pool):
    """A model trained on one class only predicts that class everywhere."""
    inclusion = np.stack([pool["label"] == 0, pool["label"] == 1])
    cfg = train.TrainConfig(epochs=15, batch_size=32, learning_rate=0.05)
    r = train.train_models(_model(), pool, cfg, inclusion=inclusion)
    preds = r.logits["train"].argmax(-1)
    assert (preds[0] == 0).mean() > 0.95 and (preds[1] == 1).mean() > 0.95


def test_shadow_inclusion_is_bernoulli_and_cached(pool, tmp_path):
    kw = dict(
        num_models=4,
        seed=3,
        cache_dir=str(tmp_path),
        score_sets={"extra": {k: v[:10] for k, v in pool.items()}},
    )
    a = train.train_shadow_models(_model(), pool, CFG, **kw)
    b = train.train_shadow_models(_model(), pool, CFG, **kw)
    assert (a.cache, b.cache) == ("miss", "hit")
    assert abs(a.inclusion.mean() - 0.5) < 0.1
    np.testing.assert_array_equal(a.inclusion, b.inclusion)
    np.testing.assert_allclose(a.logits["extra"], b.logits["extra"])
    assert a.logits["extra"].shape == (4, 10, 10)
    c = train.train_shadow_models(_model(), pool, CFG, **{**kw, "seed": 4})
    assert c.cache == "miss" and c.hash != a.hash


def test_replica_axis_sharded_over_four_devices(pool):
    inclusion = np.random.default_rng(1).random((4, 160)) < 0.5
    one = train.train_models(_model(), pool, CFG, inclusion=inclusion)
    four = train.train_models(
        _model(),
        pool,
        CFG,
        inclusion=inclusion,
        mesh=train.make_mesh(4, axis="replica"),
        keep_variables=True,
    )
    np.testing.assert_allclose(
        one.logits["train"], four.logits["train"], rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="divide"):
        train.train_models(
            _model(),
            pool,
            CFG,
            inclusion=inclusion[:3],
            mesh=train.make_mesh(4, axis="replica"),
        )


def test_unlearn_replicas_equals_separate_runs(digits_class_split):
    split = digits_class_split
    model = _model()
    apply_fn = models.make_apply_fn(model)
    keys = jax.random.split(jax.random.key(0), 2)
    v = jax.vmap(lambda k: models.init(model, k, split.retain["image"][:1]))(keys)
    m = methods.get("neggrad_plus", apply_fn=apply_fn, learning_rate=0.01)
    rep = train.unlearn_replicas(
        m,
        v,
        split,
        epochs=2,
        batch_size=64,
        keys=keys,
        hparams={"retain_weight": jnp.array([0.9, 0.99])},
    )
    for i, w in enumerate((0.9, 0.99)):
        one = train.unlearn(
            m,
            jax.tree.map(lambda x, i=i: x[i], v),
            split,
            epochs=2,
            batch_size=64,
            key=keys[i],
            hparams={"retain_weight": w},
        )
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], rep.state.variables),
            one.state.variables,
            rtol=1e-4,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            rep.history[-1]["loss"][i], one.history[-1]["loss"], rtol=1e-4
        )


def test_bad_inclusion(pool):
    with pytest.raises(ValueError, match="inclusion"):
        train.train_models(_model(), pool, CFG, inclusion=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="at least one"):
        train.train_models(_model(), pool, CFG, inclusion=np.zeros((2, 160), bool))
    with pytest.raises(ValueError, match="num_models"):
        train.train_shadow_models(_model(), pool, CFG, num_models=0)


def _phi(logits, labels):
    return jax.vmap(eval_lib.logit_confidence, in_axes=(0, None))(logits, labels)


@pytest.mark.parametrize(
    "method_name,epochs,expect_high",
    [
        ("finetune", 0, True),  # no unlearning at all: trivially detected
        ("retrain", 8, False),  # exact unlearning: indistinguishable
    ],
)
def test_ulira_detects_no_unlearning_and_not_retraining(
    digits_class_split, method_name, epochs, expect_high
):
    split = digits_class_split
    model = _model()
    cfg = train.TrainConfig(epochs=8, batch_size=64, learning_rate=0.05)
    apply_fn = models.make_apply_fn(model)
    # "retrain" gets exactly the retrained shadows' recipe, so the two
    # ensembles come from one distribution.
    steps = data.num_batches(len(split.retain["label"]), 64)
    method = methods.get(
        method_name,
        apply_fn=apply_fn,
        tx=cfg.tx(steps),
        init_fn=lambda k: models.init(model, k, split.retain["image"][:1]),
    )
    sh = train.ulira_shadows(
        model,
        split,
        method,
        cfg,
        num_models=6,
        unlearn_epochs=epochs,
        unlearn_batch_size=64,
        seed=11,
    )
    assert sh.unlearned_logits.shape == sh.retrained_logits.shape
    labels = split.forget["label"]
    u, r = _phi(sh.unlearned_logits, labels), _phi(sh.retrained_logits, labels)
    out = eval_lib.ulira(u[0], u[1:], r[1:])
    bacc = float(out["heldout_balanced_accuracy"])
    if expect_high:
        assert bacc > 0.95, bacc
    else:
        assert bacc < 0.75, bacc
