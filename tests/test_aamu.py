"""A-AMU wrapper and its registered instances (a_cf, a_scrub, a_l1)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import losses, methods, models

MODELS = {
    "mlp": dict(name="mlp", hidden=(16,)),
    "cnn": dict(name="cnn", widths=(8, 8)),
}
B = 8


@pytest.fixture(scope="module", params=sorted(MODELS))
def net(request, digits_class_split):
    split = digits_class_split
    kw = dict(MODELS[request.param])
    model = models.get_model(kw.pop("name"), split.num_classes, **kw)
    example = jnp.asarray(split.retain["image"][:1])
    original = models.init(model, jax.random.key(0), example)
    # A small forget set (<= 4B: the sample is the whole set) and an unseen
    # pool of the forget class plus others (class matching must drop those).
    forget = {k: v[:20] for k, v in split.forget.items()}
    unseen = {k: v[:40] for k, v in split.val.items()}
    return dict(
        kind=request.param,
        split=split,
        apply_fn=models.make_apply_fn(model),
        original=original,
        forget=forget,
        unseen=unseen,
    )


def _part(s, n, start=0):
    return {
        "image": jnp.asarray(s["image"][start : start + n]),
        "label": jnp.asarray(s["label"][start : start + n], jnp.int32),
        "mask": jnp.ones(n, bool),
    }


def _batch(net, start=0):
    return {
        "retain": _part(net["split"].retain, B, start),
        "forget": _part(net["split"].forget, B, start),
    }


def _a_cf(net, **kw):
    return methods.get(
        "a_cf",
        apply_fn=net["apply_fn"],
        forget_set=net["forget"],
        unseen_set=net["unseen"],
        **kw,
    )


@pytest.fixture(scope="module")
def stepped(net):
    """One compiled step of the base method and of its A-AMU wrapper (base
    optimiser, unsquared main loss), at lambda = 0 and lambda = 34."""
    base = methods.get("finetune", apply_fn=net["apply_fn"], learning_rate=0.05)
    wrapped = methods.a_amu(
        base,
        net["apply_fn"],
        forget_set=net["forget"],
        unseen_set=net["unseen"],
        square="none",
        optimizer="base",
    )
    batch, key = _batch(net), jax.random.key(2)
    step = jax.jit(wrapped.step)
    out = {
        w: step(wrapped.init(net["original"], hparams={"aamu_weight": w}), batch, key)
        for w in (0.0, 34.0)
    }
    return dict(
        base=jax.jit(base.step)(base.init(net["original"]), batch, key),
        wrapped=out,
        batch=batch,
    )


def test_objective_is_main_loss_plus_lambda_mmd(net, stepped):
    """Forget set <= 4B: the sample is the whole set; the unseen sample is the
    pool's examples of the forgotten class (the loss is permutation-invariant)."""
    _, metrics = stepped["wrapped"][34.0]
    batch = stepped["batch"]
    apply_fn, v = net["apply_fn"], net["original"]

    @jax.jit
    def ce(s):
        n = len(s["label"])
        logits, _ = apply_fn(
            v, jnp.asarray(s["image"]), train=True, mask=jnp.ones(n, bool)
        )
        return losses.cross_entropy(logits, jnp.asarray(s["label"]))

    keep = np.isin(net["unseen"]["label"], np.unique(net["forget"]["label"]))
    matched = {k: x[keep] for k, x in net["unseen"].items()}
    retain_ce = jnp.mean(ce({k: batch["retain"][k] for k in ("image", "label")}))
    expected, parts = losses.aamu_loss(
        retain_ce,
        ce(net["forget"]),
        ce(matched),
        weight=34.0,
        temperature=0.5,
        square=False,
    )
    assert int(metrics["forget_sample"]) == len(net["forget"]["label"])
    assert int(metrics["unseen_sample"]) == int(keep.sum())
    assert 0 < keep.sum() < len(keep)  # the pool holds other classes too
    np.testing.assert_allclose(metrics["mmd2"], parts["mmd2"], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=2e-4)


def test_zero_weight_unsquared_is_exactly_the_base_step(stepped):
    """lambda = 0, square='none', the base optimiser: the base method's step,
    bit for bit (params, BatchNorm statistics, optimiser state)."""
    s_base, _ = stepped["base"]
    s_wrap, m_wrap = stepped["wrapped"][0.0]
    for name in ("variables", "opt_state"):
        a, b = getattr(s_base, name), getattr(s_wrap, name)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    assert float(m_wrap["mmd2"]) > 0.0


def test_extra_forward_passes_leave_batchnorm_statistics_alone(net, stepped):
    """The forget / unseen forwards run in training mode but their BatchNorm
    updates are discarded: the statistics after a step are those of the
    retain forward alone, whatever lambda."""
    states = [stepped["wrapped"][w][0] for w in (0.0, 34.0)]
    stats = [s.variables.get("batch_stats", {}) for s in states]
    if net["kind"] == "cnn":
        assert jax.tree.leaves(stats[0])
    for a, b in zip(jax.tree.leaves(stats[0]), jax.tree.leaves(stats[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    # ... while the parameters do feel the MMD term
    p0, p1 = (jax.tree.leaves(s.variables["params"]) for s in states)
    assert any(not np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))


def test_class_matching_and_uniform_sampling():
    eligible = jnp.array([True, False, True, True, False, True])
    idx, mask = jax.jit(methods._aamu._gumbel_top, static_argnums=2)(
        jax.random.key(0), eligible, 6
    )
    assert sorted(np.asarray(idx).tolist()) == list(range(6))  # no repeats
    assert int(mask.sum()) == 4 and bool(jnp.all(eligible[idx] == mask))
    # the eligible ones come first, each equally likely to be drawn first
    first = jax.vmap(lambda k: methods._aamu._gumbel_top(k, eligible, 2)[0][0])(
        jax.random.split(jax.random.key(1), 4000)
    )
    counts = np.bincount(np.asarray(first), minlength=6)
    assert counts[[1, 4]].sum() == 0
    assert np.all(np.abs(counts[[0, 2, 3, 5]] / 4000 - 0.25) < 0.04)


def _mlp_net(split):
    model = models.get_model("mlp", split.num_classes, hidden=(8,))
    return dict(
        split=split,
        apply_fn=models.make_apply_fn(model),
        original=models.init(model, jax.random.key(0), split.retain["image"][:1]),
        forget={k: v[:20] for k, v in split.forget.items()},
        unseen={k: v[:40] for k, v in split.val.items()},
    )


def test_vmapped_weight_sweep_matches_single_runs(digits_class_split):
    """A sweep of a scalar hyperparameter (one model suffices)."""
    net = _mlp_net(digits_class_split)
    m = _a_cf(net)
    state = m.init(net["original"])
    batch, key = _batch(net), jax.random.key(4)
    weights = jnp.array([0.0, 10.0, 34.0])
    states = jax.vmap(
        lambda s, w: s.__class__(
            step=s.step,
            variables=s.variables,
            opt_state=s.opt_state,
            hparams={**s.hparams, "aamu_weight": w},
            extra=s.extra,
        ),
        in_axes=(None, 0),
    )(state, weights)
    swept, metrics = jax.jit(jax.vmap(m.step, in_axes=(0, None, None)))(
        states, batch, key
    )
    one = m.init(net["original"], hparams={"aamu_weight": 10.0})
    single, m1 = jax.jit(m.step)(one, batch, key)
    # (compared through the metrics: Adam's first step is sign(g) * lr, so
    # the exactly-zero gradients of conv biases before BatchNorm turn float
    # noise into +-lr in the parameters)
    for name in ("loss", "mmd2", "main_loss", "grad_norm"):
        np.testing.assert_allclose(metrics[name][1], m1[name], rtol=1e-4)
    assert float(metrics["loss"][0]) < float(metrics["loss"][2])


def test_a_scrub_max_steps_carry_no_mmd_and_min_steps_square_ce(digits_class_split):
    split = digits_class_split
    model = models.get_model("mlp", split.num_classes, hidden=(16,))
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    forget = {k: x[:20] for k, x in split.forget.items()}
    kw = dict(
        forget_set=forget, retain_set=split.retain, msteps=1, max_steps_per_epoch=1
    )
    base = methods.scrub(apply_fn, alpha=0.001, gamma=0.99, temperature=2.0, **kw)
    kw.pop("max_steps_per_epoch")
    a = methods.a_amu(
        base,
        apply_fn,
        forget_set=forget,
        unseen_set=split.val,
        square="retain_ce",
        main_weight="gamma",
    )
    sa, sb = a.init(v, steps_per_epoch=4), base.init(v, steps_per_epoch=4)
    batch = {"retain": _part(split.retain, B), "forget": _part(split.forget, B)}
    key = jax.random.key(5)
    a_step, b_step = jax.jit(a.step), jax.jit(base.step)
    _, ma = a_step(sa, batch, key)
    _, mb = b_step(sb, batch, key)
    assert float(ma["max_step"]) == 1.0 and float(mb["max_step"]) == 1.0
    # a max step: the base loss (-KL) unchanged, no MMD term
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
    # the reference code's forget steps minimise -0.2 KL: forget_weight
    sw = base.init(v, steps_per_epoch=4, hparams={"forget_weight": 0.2})
    _, mw = b_step(sw, batch, key)
    np.testing.assert_allclose(mw["loss"], 0.2 * mb["loss"], rtol=1e-6)
    assert float(
        methods.get(
            "a_scrub", apply_fn=apply_fn, forget_set=forget, unseen_set=split.val
        )
        .init(v)
        .hparams["forget_weight"]
    ) == pytest.approx(0.2)
    sa = dataclasses.replace(sa, step=jnp.int32(1))
    sb = dataclasses.replace(sb, step=jnp.int32(1))
    _, ma = a_step(sa, batch, key)
    _, mb = b_step(sb, batch, key)
    assert float(ma["max_step"]) == 0.0
    ce, kl = float(mb["retain_ce"]), float(mb["retain_kl"])
    expected = 0.99 * ce**2 + 0.001 * kl + 34.0 * float(ma["mmd2"])
    np.testing.assert_allclose(ma["loss"], expected, rtol=1e-5)


def test_registered_instances_and_reference_settings(digits_class_split):
    split = digits_class_split
    model = models.get_model("mlp", split.num_classes, hidden=(8,))
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    ctx = dict(
        apply_fn=apply_fn,
        forget_set=split.forget,
        retain_set=split.retain,
        unseen_set=split.val,
        num_classes=10,
        val_set=split.val,
    )
    for name in ("a_cf", "a_scrub", "a_l1"):
        m = methods.get(name, **ctx)
        hp = m.init(v, steps_per_epoch=10).hparams
        assert float(hp["learning_rate"]) == pytest.approx(2.4e-4)
        assert float(hp["aamu_weight"]) == 34.0 and float(hp["aamu_k"]) == 2.0
    ref = methods.get("a_cf", **ctx, **methods.AAMU_REFERENCE_CODE)
    batch = {"retain": _part(split.retain, B)}
    _, metrics = jax.jit(ref.step)(ref.init(v), batch, jax.random.key(0))
    assert bool(jnp.isfinite(metrics["loss"]))
    # A-CF's main loss is the squared batch-mean retain cross-entropy
    np.testing.assert_allclose(
        metrics["main_loss"], metrics["retain_ce"] ** 2, rtol=1e-6
    )


def test_bad_arguments_name_the_argument(digits_class_split):
    split = digits_class_split
    model = models.get_model("mlp", split.num_classes, hidden=(8,))
    apply_fn = models.make_apply_fn(model)
    base = methods.get("finetune", apply_fn=apply_fn)
    with pytest.raises(ValueError, match="unseen_set"):
        methods.get("a_cf", apply_fn=apply_fn, forget_set=split.forget)
    with pytest.raises(ValueError, match="forget_set"):
        methods.get("a_cf", apply_fn=apply_fn, unseen_set=split.val)
    ok = dict(forget_set=split.forget, unseen_set=split.val)
    with pytest.raises(ValueError, match="square"):
        methods.a_amu(base, apply_fn, square="cube", **ok)
    with pytest.raises(ValueError, match="main_weight"):
        methods.a_amu(base, apply_fn, main_weight="gamma", **ok)
    with pytest.raises(ValueError, match="sample_factor"):
        methods.a_amu(base, apply_fn, sample_factor=0, **ok)
    with pytest.raises(ValueError, match="weight"):
        methods.a_amu(base, apply_fn, weight=-1.0, **ok)
    with pytest.raises(ValueError, match="unseen_set"):
        methods.a_amu(
            base,
            apply_fn,
            forget_set=split.forget,
            unseen_set={"image": np.zeros((3, 2, 2, 1)), "label": np.zeros(3, int)},
        )
    one_shot = methods.get(
        "svd", apply_fn=apply_fn, forget_set=split.forget, retain_set=split.retain
    )
    with pytest.raises(ValueError, match="gradient method"):
        methods.a_amu(one_shot, apply_fn, **ok)
