"""One test battery over the whole method registry (optax-style common tests)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import cli, data, methods, models, train
from jaxunlearn import eval as ev

NAMES = methods.names()
BS = 32
# Cheaper settings for tests of the step's contract (jit, vmap), where DLFD's
# defaults (15 sign steps, 50 Sinkhorn iterations) only add compile time.
CHEAP = {"dlfd": {"perturb_steps": 2, "sinkhorn_iterations": 10, "monitor_size": 16}}


@pytest.fixture(scope="module")
def setup(digits_class_split):
    split = digits_class_split
    # The main job's model and recipe, so DEFAULT_RECIPES are tested as shipped.
    model = models.get_model("mlp", split.num_classes)
    apply_fn = models.make_apply_fn(model)
    example = split.retain["image"][:1]
    original, _ = train.train_original(
        model, split, cli.CompareConfig().training, seed=0
    )
    return split, model, apply_fn, example, original


def _make(name, apply_fn, model, example, split, **kw):
    return methods.get(
        name,
        apply_fn=apply_fn,
        num_classes=split.num_classes,
        init_fn=lambda k: models.init(model, k, example),
        forget_classes=3,  # digits_class_split forgets class 3
        example_input=example,
        forget_set=split.forget,
        retain_set=split.retain,
        val_set=split.val,
        unseen_set=split.val,
        **kw,
    )


def _batch(split, key):
    sets = {"retain": split.retain, "forget": split.forget}
    out = {}
    for i, (name, s) in enumerate(sorted(sets.items())):
        idx, mask = data.epoch_indices(jax.random.fold_in(key, i), len(s["label"]), BS)
        out[name] = data.gather(
            {"image": jnp.asarray(s["image"]), "label": jnp.asarray(s["label"])},
            idx[0],
            mask[0],
        )
    return out


def test_registry_lists_required_methods():
    for name in ("retrain", "finetune", "neggrad", "neggrad_plus", "random_label"):
        assert name in NAMES
    with pytest.raises(ValueError, match="finetune"):
        methods.get("no_such_method")
    # context kwargs are dropped for factories that do not take them ...
    methods.get("neggrad", apply_fn=lambda *a, **k: None, num_classes=3)
    # ... but a misspelt hyperparameter is an error naming it
    with pytest.raises(TypeError, match="learnin_rate"):
        methods.get("neggrad", apply_fn=lambda *a, **k: None, learnin_rate=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_step_jits_is_type_stable_and_compiles_once(name, setup):
    split, model, apply_fn, example, original = setup
    m = _make(name, apply_fn, model, example, split, **CHEAP.get(name, {}))
    state = m.init(original, key=jax.random.key(0), num_steps=100)
    # All gradient methods share one inner `step` code object: reset chex's
    # per-code trace counter so each parametrised case counts only its own.
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(m.step, n=1))
    b1 = _batch(split, jax.random.key(1))
    b2 = _batch(split, jax.random.key(2))
    new_state, metrics = step(state, b1, jax.random.key(3))
    # Same structure, shapes and dtypes in and out (what lax.scan needs).
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
    assert jax.tree.structure(state) == jax.tree.structure(new_state)
    # A lax.cond between old and new state only type-checks if they match.
    jax.jit(lambda p, a, b: jax.lax.cond(p, lambda: a, lambda: b))(
        True, state, new_state
    )
    # Second call with new values of the same shapes: no retrace.
    newer, metrics2 = step(new_state, b2, jax.random.key(4))
    assert int(newer.step) == 2
    for v in jax.tree.leaves((metrics, metrics2)):
        assert v.shape == () and bool(jnp.isfinite(v))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_two_seeds_equals_two_runs(name, setup):
    split, model, apply_fn, example, original = setup
    m = _make(name, apply_fn, model, example, split, **CHEAP.get(name, {}))
    batch = _batch(split, jax.random.key(1))
    states, keys = [], []
    for seed in (0, 1):
        v = models.init(model, jax.random.key(10 + seed), example)
        states.append(m.init(v, key=jax.random.key(20 + seed), num_steps=100))
        keys.append(jax.random.key(30 + seed))
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    vstep = jax.jit(jax.vmap(m.step, in_axes=(0, None, 0)))
    sstep = jax.jit(m.step)
    vs, vmetrics = vstep(stacked, batch, jnp.stack(keys))
    vs, vmetrics = vstep(vs, batch, jnp.stack(keys))
    for i in range(2):
        s, _ = sstep(states[i], batch, keys[i])
        s, metrics = sstep(s, batch, keys[i])
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], vs.variables),
            s.variables,
            rtol=2e-5,
            atol=2e-6,
        )
        np.testing.assert_allclose(vmetrics["loss"][i], metrics["loss"], rtol=1e-4)


# Retrain is a from-scratch run, so it gets the original model's recipe.
RECIPES = {**cli.DEFAULT_RECIPES, "retrain": {"learning_rate": 0.05, "epochs": 15}}
RETAIN_MARGIN = 0.15  # retain accuracy may drop by at most this much
FORGET_DROP = 0.5  # forget accuracy must fall by at least this much
MAX_EPOCHS = 30  # budget; training stops at the first epoch that forgets


@pytest.mark.parametrize("name", NAMES)
def test_forgets_a_class_and_keeps_retain_accuracy(name, setup):
    """Within MAX_EPOCHS at its recipe's learning rate, each method reaches a
    forget accuracy FORGET_DROP below the original's while its retain accuracy
    is within RETAIN_MARGIN of the original's (checked after every epoch;
    training stops at the first epoch where both hold, as early stopping
    would)."""
    split, model, apply_fn, example, original = setup
    recipe = dict(RECIPES[name])
    del recipe["epochs"]
    m = _make(name, apply_fn, model, example, split, **recipe)

    def acc(v, part):
        return ev.accuracy(train.predict(apply_fn, v, part["image"]), part["label"])

    f0, r0 = acc(original, split.forget), acc(original, split.retain)
    assert f0 > 0.9
    seen = []

    def until_forgotten(epoch, metrics, state):
        f, r = acc(state.variables, split.forget), acc(state.variables, split.retain)
        seen.append((epoch, f, r))
        return f < f0 - FORGET_DROP and r > r0 - RETAIN_MARGIN

    train.unlearn(
        m,
        original,
        split,
        epochs=MAX_EPOCHS,
        batch_size=64,
        key=jax.random.key(5),
        callback=until_forgotten,
    )
    _, f1, r1 = seen[-1]
    assert f1 < f0 - FORGET_DROP, (name, f0, seen)
    assert r1 > r0 - RETAIN_MARGIN, (name, r0, seen)
