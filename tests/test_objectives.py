"""Composable objectives, sweepable learning rate, frozen groups, per-set
batches, and the fidelity options of the baselines (RWFT BatchNorm mode, SVD
projections, per-example random labels). Freezing and batch tests run on an
MLP and a BatchNorm CNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train

MODELS = {"mlp": {"hidden": (16, 16)}, "cnn": {"widths": (4, 8)}}


def _leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def split():
    ds = data.load("digits")
    return data.split(ds, "class", forget_classes=3, seed=0)


def _model(name, split):
    model = models.get_model(name, 10, **MODELS[name])
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    return model, models.make_apply_fn(model), v


def _batch(split, n=16, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("retain", "forget"):
        part = getattr(split, name)
        idx = rng.choice(len(part["label"]), n, replace=False)
        out[name] = {
            "image": jnp.asarray(part["image"][idx]),
            "label": jnp.asarray(part["label"][idx]),
            "mask": jnp.ones(n, bool),
            "index": jnp.asarray(idx, jnp.int32),
        }
    return out


# --- objectives --------------------------------------------------------------


def test_objective_is_reachable_and_sees_the_step_counter(split):
    _, apply_fn, v = _model("mlp", split)
    ft = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.1, weight_decay=0.0)
    base = methods.objective_of(ft)
    seen = []

    def ramp(variables, batch, key, hparams, extra, step):
        loss, aux = base(variables, batch, key, hparams, extra, step)
        seen.append(step)
        w = jnp.minimum(1.0, step.astype(jnp.float32) / hparams["ramp"])
        return w * loss, (aux[0], {**aux[1], "w": w})

    m = methods.with_objective(ft, ramp, hparams={"ramp": 2.0})
    assert m.driver == ft.driver
    state = m.init(v)
    assert float(state.hparams["learning_rate"]) == pytest.approx(0.1)
    step = jax.jit(m.step)
    ws = []
    for i in range(3):
        state, metrics = step(state, _batch(split, seed=i), jax.random.key(i))
        ws.append(float(metrics["w"]))
    assert ws == [0.0, 0.5, 1.0]
    # at step 0 the ramp weight is 0 (and weight decay is off): no move
    s0 = m.init(v)
    s1, _ = step(s0, _batch(split), jax.random.key(0))
    assert _leaves_equal(s1.variables["params"], v["params"])
    with pytest.raises(ValueError, match="gradient method"):
        methods.objective_of(
            methods.get(
                "svd",
                apply_fn=apply_fn,
                forget_set=split.forget,
                retain_set=split.retain,
            )
        )


def test_learning_rate_is_sweepable_with_vmap(split):
    """One vmapped program over two learning rates == two separate runs."""
    _, apply_fn, v = _model("mlp", split)
    m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05)
    keys = jax.random.split(jax.random.key(3), 2)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), v)
    swept = train.unlearn_replicas(
        m,
        stacked,
        split,
        epochs=1,
        batch_size=128,
        keys=keys,
        hparams={"learning_rate": jnp.array([0.01, 0.2])},
    )
    for i, lr in enumerate((0.01, 0.2)):
        one = train.unlearn(
            m,
            v,
            split,
            epochs=1,
            batch_size=128,
            key=keys[i],
            hparams={"learning_rate": lr},
        )
        got = jax.tree.map(lambda x, i=i: x[i], swept.state.variables)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(one.variables)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # a different rate gives a different model
    a = jax.tree.map(lambda x: x[0], swept.state.variables)
    b = jax.tree.map(lambda x: x[1], swept.state.variables)
    assert not _leaves_equal(a, b)


def test_unit_rate_sgd_equals_fixed_rate_sgd(split):
    """The sweepable form (unit-rate SGD scaled by hparams) is PyTorch's SGD."""
    _, apply_fn, v = _model("mlp", split)
    from jaxunlearn import optim

    sweep = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.07)
    fixed = methods.get(
        "finetune",
        apply_fn=apply_fn,
        tx=optim.sgd(0.07, momentum=0.9, weight_decay=5e-4),
    )
    sa, sb = sweep.init(v), fixed.init(v)
    for i in range(3):
        b = _batch(split, seed=i)
        sa, _ = jax.jit(sweep.step)(sa, b, jax.random.key(i))
        sb, _ = jax.jit(fixed.step)(sb, b, jax.random.key(i))
    for x, y in zip(jax.tree.leaves(sa.variables), jax.tree.leaves(sb.variables)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


# --- frozen groups -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("bn", ["train", "eval"])
def test_rwft_2_o_frozen_groups_keep_params_and_batch_stats(split, name, bn):
    _, apply_fn, v = _model(name, split)
    m = methods.get(
        "rwft_2_o", apply_fn=apply_fn, forget_classes=3, learning_rate=0.05, bn=bn
    )
    state = m.init(v)
    groups = set(state.variables["params"])
    trainable = {methods.intermediate_group(tuple(groups)), "head"}
    for i in range(2):
        state, _ = jax.jit(m.step)(state, _batch(split, seed=i), jax.random.key(i))
    for g in groups - trainable:
        assert _leaves_equal(state.variables["params"][g], v["params"][g]), g
        if "batch_stats" in v and g in v["batch_stats"]:
            assert _leaves_equal(
                state.variables["batch_stats"][g], v["batch_stats"][g]
            ), g
    moved = [
        g
        for g in trainable
        if not _leaves_equal(state.variables["params"][g], v["params"][g])
    ]
    assert moved
    if "batch_stats" in v:
        inter = methods.intermediate_group(tuple(groups))
        same = _leaves_equal(
            state.variables["batch_stats"][inter], v["batch_stats"][inter]
        )
        # train mode moves the trainable groups' running averages, eval never
        assert same == (bn == "eval")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_finetune_trainable_freezes_batch_stats_of_other_groups(split, name):
    _, apply_fn, v = _model(name, split)
    m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05, trainable="head")
    state = m.init(v)
    state, _ = jax.jit(m.step)(state, _batch(split), jax.random.key(0))
    rest = {k: x for k, x in state.variables.items() if k != "params"}
    orig = {k: x for k, x in v.items() if k != "params"}
    assert _leaves_equal(rest, orig)


def test_rwft_bn_argument_is_validated(split):
    _, apply_fn, _ = _model("mlp", split)
    with pytest.raises(ValueError, match="bn"):
        methods.get("rwft_o", apply_fn=apply_fn, forget_classes=3, bn="frozen")


# --- per-set batch sizes -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_set_has_its_own_batch_size(split, name):
    _, apply_fn, v = _model(name, split)
    shapes = {}

    def probe(variables, batch, key, hparams, extra, step):
        shapes.update({k: p["image"].shape[0] for k, p in batch.items()})
        return methods.objective_of(ft)(variables, batch, key, hparams, extra, step)

    ft = methods.get("neggrad_plus", apply_fn=apply_fn)
    m = methods.with_objective(ft, probe)
    unseen = {"image": split.test["image"][:50], "label": split.test["label"][:50]}
    sets = {"retain": split.retain, "forget": split.forget, "unseen": unseen}
    r = train.unlearn(
        m,
        v,
        sets,
        epochs=1,
        key=jax.random.key(0),
        batch_size={"retain": 64, "forget": 16, "unseen": 8},
    )
    assert shapes == {"retain": 64, "forget": 16, "unseen": 8}
    steps = data.num_batches(len(split.retain["label"]), 64)
    assert int(r.state.step) == steps
    with pytest.raises(ValueError, match="batch_size"):
        train.unlearn(
            m,
            v,
            sets,
            epochs=1,
            key=jax.random.key(0),
            batch_size={"retain": 64, "nope": 3},
        )
    with pytest.raises(ValueError, match="batch_size"):
        train.unlearn(
            m, v, sets, epochs=1, key=jax.random.key(0), batch_size={"retain": 0}
        )


# --- random labels -----------------------------------------------------------


@pytest.mark.parametrize("method", ["random_label", "salun"])
def test_per_example_random_labels_are_fixed_for_the_run(split, method):
    from jaxunlearn.methods._baselines import random_forget_labels

    key = jax.random.key(11)
    part = _batch(split)["forget"]
    a = random_forget_labels(
        jax.random.key(0), part, 10, "per_example", {"label_key": key}
    )
    b = random_forget_labels(
        jax.random.key(1), part, 10, "per_example", {"label_key": key}
    )
    np.testing.assert_array_equal(a, b)  # same example -> same label, any step
    # the labels depend on the example, not on its slot
    perm = np.arange(16)[::-1]
    c = random_forget_labels(
        jax.random.key(2),
        jax.tree.map(lambda x: x[perm], part),
        10,
        "per_example",
        {"label_key": key},
    )
    np.testing.assert_array_equal(np.asarray(c), np.asarray(a)[perm])
    # drawn over all classes, the true one included (the reference codes)
    many = {**part, "index": jnp.arange(2000), "label": jnp.zeros(2000, jnp.int32)}
    lab = np.asarray(
        random_forget_labels(None, many, 10, "per_example", {"label_key": key})
    )
    assert set(lab.tolist()) == set(range(10))
    fresh = np.asarray(
        random_forget_labels(jax.random.key(0), many, 10, "per_step", {})
    )
    assert 0 not in set(fresh.tolist())
    _, apply_fn, v = _model("mlp", split)
    kw = {"forget_set": split.forget} if method == "salun" else {}
    m = methods.get(
        method, apply_fn=apply_fn, num_classes=10, labels="per_example", **kw
    )
    state = m.init(v)
    state, metrics = jax.jit(m.step)(state, _batch(split), jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="labels"):
        methods.get(method, apply_fn=apply_fn, num_classes=10, labels="sometimes", **kw)


def test_salun_update_mask_hook_keeps_non_salient_weights(split):
    _, apply_fn, v = _model("mlp", split)
    m = methods.get(
        "salun",
        apply_fn=apply_fn,
        num_classes=10,
        forget_set=split.forget,
        threshold=0.2,
        learning_rate=0.1,
    )
    assert m.spec.update_mask is not None
    state = m.init(v)
    for i in range(2):
        state, _ = jax.jit(m.step)(state, _batch(split, seed=i), jax.random.key(i))
    for mask, a, b in zip(
        jax.tree.leaves(state.extra["mask"]),
        jax.tree.leaves(state.variables["params"]),
        jax.tree.leaves(v["params"]),
    ):
        frozen = np.asarray(mask) == 0
        np.testing.assert_array_equal(np.asarray(a)[frozen], np.asarray(b)[frozen])


# --- SVD ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_svd_projects_both_sides_and_the_classifier_input_only(split, name):
    _, apply_fn, v = _model(name, split)
    r, f = split.retain["image"][:300], split.forget["image"][:100]
    both = methods.svd_unlearn(apply_fn, v, r, f)
    inp = methods.svd_unlearn(apply_fn, v, r, f, output_side=False)
    head_b = both["params"]["head"]["kernel"]
    np.testing.assert_allclose(
        head_b, inp["params"]["head"]["kernel"], rtol=1e-5, atol=1e-6
    )
    first = sorted(g for g in v["params"] if g != "head")[0]
    diff = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(both["params"][first]),
            jax.tree.leaves(inp["params"][first]),
        )
    ]
    assert max(diff) > 1e-4  # the output side moved the hidden layers too


def test_svd_init_vmaps_over_replicas(split):
    _, apply_fn, v = _model("cnn", split)
    m = methods.get(
        "svd",
        apply_fn=apply_fn,
        forget_set=split.forget,
        retain_set=split.retain,
        retain_per_class=20,
    )
    v2 = models.init(
        models.get_model("cnn", 10, **MODELS["cnn"]),
        jax.random.key(1),
        split.retain["image"][:1],
    )
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), v, v2)
    out = jax.vmap(lambda x: m.init(x).variables)(stacked)
    for i, vi in enumerate((v, v2)):
        one = m.init(vi).variables
        got = jax.tree.map(lambda x, i=i: x[i], out)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(one)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # unlearn_replicas runs it (the bug was TracerArrayConversionError)
    res = train.unlearn_replicas(
        m,
        stacked,
        split,
        epochs=1,
        batch_size=256,
        keys=jax.random.split(jax.random.key(0), 2),
    )
    assert jax.tree.leaves(res.state.variables)[0].shape[0] == 2


def test_svd_default_sample_sizes_follow_the_reference(split):
    """About 100 retain examples per retained class and forget examples up to
    the same size."""
    _, apply_fn, v = _model("mlp", split)
    seen = {}
    orig = methods._svd.svd_unlearn

    def spy(apply_fn, variables, retain_images, forget_images, **kw):
        seen["r"], seen["f"] = len(retain_images), len(forget_images)
        return orig(apply_fn, variables, retain_images, forget_images, **kw)

    methods._svd.svd_unlearn = spy
    try:
        methods.get(
            "svd", apply_fn=apply_fn, forget_set=split.forget, retain_set=split.retain
        ).init(v)
    finally:
        methods._svd.svd_unlearn = orig
    assert seen["r"] == 900  # 9 retained digits x 100
    assert seen["f"] == len(split.forget["label"])  # fewer than 900 forget examples


@pytest.mark.parametrize("name", sorted(MODELS))
def test_frozen_groups_run_their_batchnorm_in_eval_mode(split, name):
    """With only the head trainable, every BatchNorm sits in a frozen group, so
    the training loss is the eval-mode loss (running averages normalise)."""
    from jaxunlearn import losses

    _, apply_fn, v = _model(name, split)
    m = methods.get("finetune", apply_fn=apply_fn, trainable="head")
    b = _batch(split)
    _, metrics = jax.jit(m.step)(m.init(v), b, jax.random.key(0))
    logits, _ = apply_fn(v, b["retain"]["image"], train=False)
    ce = losses.masked_mean(
        losses.cross_entropy(logits, b["retain"]["label"]), b["retain"]["mask"]
    )
    np.testing.assert_allclose(float(metrics["retain_ce"]), float(ce), rtol=1e-5)
    if "batch_stats" in v:  # all groups trainable: train mode, a different loss
        full = methods.get("finetune", apply_fn=apply_fn)
        _, m2 = jax.jit(full.step)(full.init(v), b, jax.random.key(0))
        assert abs(float(m2["retain_ce"]) - float(ce)) > 1e-4


def test_with_objective_takes_a_new_learning_rate(split):
    _, apply_fn, v = _model("mlp", split)
    ft = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.01)
    m = methods.with_objective(
        ft, methods.objective_of(ft), hparams={"learning_rate": 0.5}
    )
    assert float(m.init(v).hparams["learning_rate"]) == pytest.approx(0.5)


def test_l1_sparse_per_epoch_schedule(split):
    """decay="linear_epoch": alpha * (1 - e / E), constant within an epoch."""
    _, apply_fn, v = _model("mlp", split)
    m = methods.get("l1_sparse", apply_fn=apply_fn, decay="linear_epoch")
    r = train.unlearn(m, v, split, epochs=3, batch_size=512, key=jax.random.key(0))
    got = [h["l1_scale"] for h in r.history]
    np.testing.assert_allclose(got, [1.0, 2 / 3, 1 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        m.init(v, num_steps=10)


@pytest.mark.parametrize("decay_non_salient", [False, True])
def test_salun_weight_decay_of_non_salient_weights(split, decay_non_salient):
    """Paper: non-salient weights never move. Reference code
    (decay_non_salient=True): only gradients are masked, so coupled weight
    decay shrinks them."""
    _, apply_fn, v = _model("mlp", split)
    m = methods.get(
        "salun",
        apply_fn=apply_fn,
        num_classes=10,
        forget_set=split.forget,
        threshold=0.2,
        learning_rate=0.1,
        weight_decay=0.1,
        decay_non_salient=decay_non_salient,
    )
    state = m.init(v)
    state, _ = jax.jit(m.step)(state, _batch(split), jax.random.key(0))
    moved = []
    for mask, a, b in zip(
        jax.tree.leaves(state.extra["mask"]),
        jax.tree.leaves(state.variables["params"]),
        jax.tree.leaves(v["params"]),
    ):
        frozen = np.asarray(mask) == 0
        moved.append(not np.array_equal(np.asarray(a)[frozen], np.asarray(b)[frozen]))
    assert any(moved) == decay_non_salient


def test_rwft_bn_eval_keeps_batch_stats_with_a_retain_term(split):
    _, apply_fn, v = _model("cnn", split)
    m = methods.get(
        "rwft_o", apply_fn=apply_fn, forget_classes=3, bn="eval", retain_weight=0.5
    )
    state, _ = jax.jit(m.step)(m.init(v), _batch(split), jax.random.key(0))
    assert _leaves_equal(state.variables["batch_stats"], v["batch_stats"])


def test_missing_set_batch_size_defaults_to_the_driver_set(split):
    from jaxunlearn.train._engine import _batch_sizes

    sizes = {"retain": 100, "forget": 10, "unseen": 5}
    assert _batch_sizes({"forget": 8, "retain": 128}, sizes, "forget") == {
        "retain": 128,
        "forget": 8,
        "unseen": 8,
    }
