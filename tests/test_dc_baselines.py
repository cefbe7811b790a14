"""The Blend + A-AMU baselines: pruning, bad distillation, SSD, Fisher forgetting."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import losses, methods, models

MODELS = {
    "mlp": dict(name="mlp", hidden=(16,)),
    "cnn": dict(name="cnn", widths=(4, 4)),  # BatchNorm
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def net(request, digits_class_split):
    split = digits_class_split
    kw = dict(MODELS[request.param])
    model = models.get_model(kw.pop("name"), split.num_classes, **kw)
    example = jnp.asarray(split.retain["image"][:1])
    init_fn = jax.jit(lambda k: models.init(model, k, example))
    rng = np.random.default_rng(0)
    small = {
        "retain": _take(split.retain, rng.choice(len(split.retain["label"]), 60)),
        "forget": _take(split.forget, rng.choice(len(split.forget["label"]), 20)),
    }
    return dict(
        kind=request.param,
        split=split,
        small=small,
        apply_fn=models.make_apply_fn(model),
        init_fn=init_fn,
        original=init_fn(jax.random.key(0)),
    )


def _take(s, idx):
    return {k: np.asarray(v)[np.sort(idx)] for k, v in s.items()}


def _part(s, start, n, pad=0):
    """``n`` real rows of ``s`` from ``start`` (with ``index``), then ``pad``
    garbage rows."""
    image = jnp.asarray(s["image"][start : start + n])
    label = jnp.asarray(s["label"][start : start + n], jnp.int32)
    index = jnp.arange(start, start + n, dtype=jnp.int32)
    mask = jnp.ones(n, bool)
    if pad:
        junk = 50.0 * np.random.default_rng(1).standard_normal((pad, *image.shape[1:]))
        image = jnp.concatenate([image, jnp.asarray(junk, image.dtype)])
        label = jnp.concatenate([label, jnp.full(pad, 9, jnp.int32)])
        index = jnp.concatenate([index, jnp.zeros(pad, jnp.int32)])
        mask = jnp.concatenate([mask, jnp.zeros(pad, bool)])
    return {"image": image, "label": label, "index": index, "mask": mask}


def _batch(split, start=0, n_retain=16, n_forget=8, retain_pad=0):
    return {
        "retain": _part(split.retain, start, n_retain, pad=retain_pad),
        "forget": _part(split.forget, start, n_forget),
    }


def _equal(a, b) -> bool:
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _leaves(tree):
    return {
        jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree_util.tree_leaves_with_path(tree)
    }


# --------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------


def test_prune_schedule_is_the_reference_rule():
    epochs, rate = methods.prune_schedule(20)
    assert epochs == (0, 5, 10, 15)
    assert rate == pytest.approx(1 - 0.05 ** (1 / 4)) and round(rate, 3) == 0.527
    assert methods.prune_schedule(10) == ((0, 5), pytest.approx(1 - 0.05**0.5))
    assert methods.prune_schedule(6, prune_every=2)[0] == (0, 2, 4)
    assert methods.prune_schedule(0) == ((), 0.0)


def _targets(net):
    """Names of the pruned leaves: conv kernels (CNN), all Dense kernels (MLP)."""
    names = [k for k, x in _leaves(net["original"]["params"]).items() if "kernel" in k]
    if net["kind"] == "cnn":
        return [k for k in names if "conv" in k]
    return names


@pytest.fixture(scope="module")
def pruner(net):
    """One pruning method and its compiled step per model (E = 6 epochs of 2
    steps, prune every 2 epochs: prunes at steps 0, 4, 8)."""
    m = methods.get("pruning", apply_fn=net["apply_fn"], prune_every=2)
    return m, jax.jit(m.step)


def test_pruning_follows_the_schedule_and_pruned_weights_stay_zero(net, pruner):
    m, step = pruner
    state = m.init(net["original"], num_steps=12, steps_per_epoch=2)  # E = 6
    np.testing.assert_array_equal(state.extra["prune_steps"], [0, 4, 8])
    targets = _targets(net)
    n = sum(_leaves(net["original"]["params"])[k].size for k in targets)
    rate = 1 - 0.05 ** (1 / 3)
    want, remaining = [], n
    for _ in range(3):
        remaining -= round(rate * remaining)
        want.append(n - remaining)
    np.testing.assert_array_equal(state.extra["prune_counts"], want)
    prev_mask = None
    for i in range(12):
        batch = _batch(net["split"], start=3 * i, retain_pad=5)
        state, met = step(state, batch, jax.random.key(i))
        pruned = want[min(i // 4, 2)]
        assert float(met["sparsity"]) == pytest.approx(pruned / n, abs=1e-7)
        assert float(met["pruned"]) == (1.0 if i % 4 == 0 else 0.0)
        params, mask = _leaves(state.variables["params"]), _leaves(state.extra["mask"])
        assert sum(int((mask[k] == 0).sum()) for k in targets) == pruned
        for k in targets:
            assert np.all(params[k][mask[k] == 0] == 0.0)  # exactly zero
            if prev_mask is not None:  # once pruned, pruned for good
                assert np.all(mask[k][prev_mask[k] == 0] == 0)
        for k in set(mask) - set(targets):  # biases, norms, CNN head: no mask
            assert mask[k].shape == ()
        prev_mask = mask
    # ... while the kept weights did train
    kept = _leaves(state.variables["params"])[targets[0]]
    orig = _leaves(net["original"]["params"])[targets[0]]
    assert not np.array_equal(kept[kept != 0], orig[kept != 0])
    assert float(met["sparsity"]) == pytest.approx(0.95, abs=0.01)


def test_pruning_keeps_the_globally_largest_magnitudes(net, pruner):
    params = net["original"]["params"]
    targets = _targets(net)
    # Blow one target tensor up: a per-layer prune would still cut it, a
    # global one keeps all of it.
    leaves = _leaves(params)
    big = min(targets, key=lambda k: leaves[k].size)
    scaled = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 1000.0 if jax.tree_util.keystr(p) == big else x, params
    )
    variables = {**net["original"], "params": scaled}
    m, step = pruner
    state = m.init(variables, num_steps=12, steps_per_epoch=2)
    batch = _batch(net["split"], retain_pad=5)
    new, _ = step(state, batch, jax.random.key(0))
    flat = np.concatenate([np.abs(_leaves(scaled)[k]).ravel() for k in targets])
    n_pruned = int(state.extra["prune_counts"][0])
    assert n_pruned == round((1 - 0.05 ** (1 / 3)) * flat.size)
    cut = np.sort(flat)[n_pruned]  # smallest kept magnitude
    new_leaves, mask = _leaves(new.variables["params"]), _leaves(new.extra["mask"])
    for k in targets:
        w = np.abs(_leaves(scaled)[k])
        assert np.all(w[mask[k] == 1] >= cut) and np.all(w[mask[k] == 0] <= cut)
        assert np.all(new_leaves[k][mask[k] == 0] == 0.0)
    assert mask[big].all()  # the big tensor is kept whole
    assert leaves[big].size < flat.size - n_pruned


@pytest.mark.parametrize("net", ["cnn"], indirect=True)  # BatchNorm
def test_pruning_padded_rows_and_empty_batches_change_nothing(net, pruner):
    m, step = pruner
    state = m.init(net["original"], num_steps=12, steps_per_epoch=2)
    padded = _batch(net["split"], retain_pad=5)
    clean = jax.tree.map(lambda x: x, padded)  # other contents in the pad slots
    clean["retain"]["image"] = jnp.where(
        padded["retain"]["mask"][:, None, None, None], padded["retain"]["image"], 0.0
    )
    a, _ = step(state, clean, jax.random.key(1))
    b, _ = step(state, padded, jax.random.key(1))
    chex.assert_trees_all_close(a.variables, b.variables, rtol=1e-5, atol=1e-6)
    assert _equal(a.extra, b.extra)
    # An all-padding batch at a prune step: no prune, no step, nothing.
    empty = jax.tree.map(lambda x: x, padded)
    empty["retain"]["mask"] = jnp.zeros_like(padded["retain"]["mask"])
    c, met = step(state, empty, jax.random.key(1))
    assert _equal(c, state)
    assert float(met["pruned"]) == 0.0


def test_pruning_targets_and_validation(net):
    mk = dict(apply_fn=net["apply_fn"])
    if net["kind"] == "mlp":
        with pytest.raises(ValueError, match="target"):
            methods.get("pruning", target="conv", **mk).init(
                net["original"], num_steps=4
            )
    else:  # "kernels" adds the Dense head to the convs
        m = methods.get("pruning", target="kernels", **mk)
        s = m.init(net["original"], num_steps=4)
        assert s.extra["mask"]["head"]["kernel"].shape == (4, 10)
    with pytest.raises(ValueError, match="num_steps"):
        methods.get("pruning", **mk).init(net["original"])
    for bad, exc, arg in [
        (dict(target_sparsity=1.0), ValueError, "target_sparsity"),
        (dict(target_sparsity="0.9"), TypeError, "target_sparsity"),
        (dict(prune_every=0), ValueError, "prune_every"),
        (dict(prune_epochs="05"), TypeError, "prune_epochs"),
        (dict(prune_epochs=[-1]), ValueError, "prune_epochs"),
        (dict(prune_rate=1.5), ValueError, "prune_rate"),
        (dict(target="dense"), ValueError, "target"),
        (dict(learning_rate=0.0), ValueError, "learning_rate"),
    ]:
        with pytest.raises(exc, match=arg):
            methods.get("pruning", **mk, **bad)


# --------------------------------------------------------------------------
# bad distillation
# --------------------------------------------------------------------------


def _bd(net, **kw):
    return methods.get(
        "bad_distillation",
        apply_fn=net["apply_fn"],
        init_fn=net["init_fn"],
        retain_set=net["split"].retain,
        **kw,
    )


@pytest.fixture(scope="module")
def distiller(net):
    m = _bd(net)
    return m, jax.jit(m.step)


def test_bad_distillation_loss_is_the_t2_scaled_kl_to_the_mixed_teacher(net, distiller):
    m, step = distiller
    state = m.init(net["original"], key=jax.random.key(3))
    assert _equal(state.extra["incompetent"], net["init_fn"](jax.random.key(3)))
    assert float(state.hparams["temperature"]) == 2.0
    batch = _batch(net["split"], n_retain=12, n_forget=6, retain_pad=3)
    r, f = batch["retain"], batch["forget"]
    apply_fn, t = net["apply_fn"], 2.0

    @jax.jit
    def manual(student, incompetent):
        good, _ = apply_fn(student, r["image"], train=False)
        bad, _ = apply_fn(incompetent, f["image"], train=False)
        mask = jnp.concatenate([r["mask"], f["mask"]])
        images = jnp.concatenate([r["image"], f["image"]])
        logits, _ = apply_fn(student, images, train=True, mask=mask)
        log_t = jax.nn.log_softmax(jnp.concatenate([good, bad]) / t)
        log_s = jax.nn.log_softmax(logits / t)
        kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1)
        return jnp.sum(jnp.where(mask, kl, 0.0)) / jnp.sum(mask) * t**2

    want = float(manual(net["original"], state.extra["incompetent"]))
    _, met = step(state, batch, jax.random.key(1))
    np.testing.assert_allclose(float(met["loss"]), want, rtol=1e-4)
    if net["kind"] != "mlp":
        return
    # ... which is T**2 times bad_teacher's loss at the same T and teachers.
    bt = methods.get(
        "bad_teacher", apply_fn=apply_fn, init_fn=net["init_fn"], temperature=t
    )
    bt_state = bt.init(net["original"], key=jax.random.key(3))
    _, bt_met = jax.jit(bt.step)(bt_state, batch, jax.random.key(1))
    np.testing.assert_allclose(float(met["loss"]), 4 * float(bt_met["loss"]), rtol=1e-5)


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_bad_distillation_retain_fraction_is_a_fixed_subset(net, distiller):
    n = len(net["split"].retain["label"])
    m = _bd(net, retain_fraction=0.623)
    state = m.init(net["original"], key=jax.random.key(3))
    keep = np.asarray(state.extra["retain_keep"])
    assert keep.shape == (n,) and keep.sum() == round(0.623 * n)
    again = m.init(net["original"], key=jax.random.key(3))
    assert _equal(again.extra, state.extra)
    # The loss ignores the retain rows outside the subset.
    batch = _batch(net["split"], n_retain=12, n_forget=6, retain_pad=3)
    sub = jax.tree.map(lambda x: x, batch)
    sub["retain"]["mask"] = batch["retain"]["mask"] & keep[:15]
    assert 0 < int(sub["retain"]["mask"].sum()) < 12
    _, full_step = distiller
    a, met_a = jax.jit(m.step)(state, batch, jax.random.key(1))
    b, met_b = full_step(
        dataclasses.replace(
            state, extra={k: v for k, v in state.extra.items() if k != "retain_keep"}
        ),
        sub,
        jax.random.key(1),
    )
    np.testing.assert_allclose(float(met_a["loss"]), float(met_b["loss"]), rtol=1e-5)
    chex.assert_trees_all_close(a.variables, b.variables, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_bad_distillation_validation(net):
    mk = dict(apply_fn=net["apply_fn"])
    with pytest.raises(ValueError, match="init_fn"):
        methods.get("bad_distillation", **mk)
    with pytest.raises(TypeError, match="init_fn"):
        methods.get("bad_distillation", init_fn=3, **mk)
    mk["init_fn"] = net["init_fn"]
    with pytest.raises(ValueError, match="retain_set"):
        methods.get("bad_distillation", retain_fraction=0.5, **mk)
    for bad, exc, arg in [
        (dict(retain_fraction=0.0), ValueError, "retain_fraction"),
        (dict(retain_fraction=1.5), ValueError, "retain_fraction"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(momentum=2.0), ValueError, "momentum"),
        (dict(tx="sgd"), TypeError, "tx"),
    ]:
        with pytest.raises(exc, match=arg):
            methods.get("bad_distillation", **mk, **bad)


# --------------------------------------------------------------------------
# SSD
# --------------------------------------------------------------------------

SSD_HP = {
    "selection_weighting": 10.0,
    "dampening_constant": 1.0,
    "exponent": 1.0,
    "lower_bound": 1.0,
}


def test_ssd_dampen_known_answer():
    p = {"w": jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])}
    i_f = {"w": jnp.array([1.0, 5.0, 0.5, 100.0, 10.0])}
    i_d = {"w": jnp.array([1.0, 0.1, 1.0, 1.0, 1.0])}
    # selected iff I_f > 10 I_D: entries 1 and 3 (10 > 10 is not)
    out = methods.ssd_dampen(p, i_f, i_d, SSD_HP)["w"]
    np.testing.assert_array_equal(out[np.array([0, 2, 4])], [1.0, 3.0, 5.0])
    np.testing.assert_allclose(out[1], 2.0 * 0.1 / 5.0, rtol=1e-6)
    np.testing.assert_allclose(out[3], 4.0 * 1.0 / 100.0, rtol=1e-6)
    # lambda large: the factor is capped at the lower bound 1 (never amplifies);
    # exponent 2 squares the ratio.
    hp = {**SSD_HP, "dampening_constant": 1000.0}
    np.testing.assert_array_equal(methods.ssd_dampen(p, i_f, i_d, hp)["w"], p["w"])
    hp = {**SSD_HP, "exponent": 2.0}
    np.testing.assert_allclose(
        methods.ssd_dampen(p, i_f, i_d, hp)["w"][1], 2.0 * 0.02**2, rtol=1e-5
    )


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_ssd_importance_is_the_mean_squared_batch_gradient(net):
    apply_fn, v = net["apply_fn"], net["original"]
    s = {k: x[:5] for k, x in net["small"]["forget"].items()}
    imp = methods.ssd_importance(apply_fn, v, s, batch_size=2)

    @jax.jit
    def sq_grad_of(x, y):
        def ce(p):
            logits, _ = apply_fn({**v, "params": p}, x, train=False)
            return jnp.mean(losses.cross_entropy(logits, y))

        return jax.tree.map(jnp.square, jax.grad(ce)(v["params"]))

    def sq_grad(lo, hi):
        return sq_grad_of(s["image"][lo:hi], s["label"][lo:hi])

    parts = [sq_grad(0, 2), sq_grad(2, 4), sq_grad(4, 5)]  # last batch short
    want = jax.tree.map(lambda a, b, c: (a + b + c) / 3, *parts)
    chex.assert_trees_all_close(imp, want, rtol=2e-4, atol=1e-10)


def test_ssd_dampens_only_selected_parameters(net):
    apply_fn, v, small = net["apply_fn"], net["original"], net["small"]
    # One batch per set: the importances do not depend on the shuffles.
    bs = 128
    m = methods.get(
        "ssd",
        apply_fn=apply_fn,
        forget_set=small["forget"],
        retain_set=small["retain"],
        batch_size=bs,
        selection_weighting=2.0,
    )
    state = m.init(v)
    full = {
        k: np.concatenate([small["retain"][k], small["forget"][k]])
        for k in "image label".split()
    }
    i_f = _leaves(methods.ssd_importance(apply_fn, v, small["forget"], batch_size=bs))
    i_d = _leaves(methods.ssd_importance(apply_fn, v, full, batch_size=bs))
    old, new = _leaves(v["params"]), _leaves(state.variables["params"])
    n_sel = 0
    for k in old:
        clear_no = i_f[k] < 0.9 * 2.0 * i_d[k]
        clear_yes = i_f[k] > 1.1 * 2.0 * i_d[k]
        n_sel += int(clear_yes.sum())
        np.testing.assert_array_equal(new[k][clear_no], old[k][clear_no])
        factor = np.minimum(i_d[k][clear_yes] / i_f[k][clear_yes], 1.0)
        np.testing.assert_allclose(
            new[k][clear_yes], old[k][clear_yes] * factor, rtol=1e-3, atol=1e-9
        )
    assert n_sel > 0
    # Eval mode: BatchNorm statistics untouched; steps are no-ops.
    assert _equal(
        {k: x for k, x in state.variables.items() if k != "params"},
        {k: x for k, x in v.items() if k != "params"},
    )
    after, met = jax.jit(m.step)(state, _batch(net["split"]), jax.random.key(0))
    assert _equal(after.variables, state.variables) and int(after.step) == 1
    assert float(met["loss"]) == 0.0
    # Sweepable at init: a larger alpha selects fewer parameters.
    strict = m.init(v, hparams={"selection_weighting": 1e6})
    changed = sum(
        int((a != b).sum())
        for a, b in zip(
            jax.tree.leaves(strict.variables["params"]),
            jax.tree.leaves(v["params"]),
            strict=True,
        )
    )
    assert changed < n_sel


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_ssd_validation(net):
    mk = dict(apply_fn=net["apply_fn"], forget_set=net["small"]["forget"])
    with pytest.raises(ValueError, match="retain_set"):
        methods.get("ssd", **mk)
    mk["retain_set"] = net["small"]["retain"]
    for bad, exc, arg in [
        (dict(selection_weighting=-1.0), ValueError, "selection_weighting"),
        (dict(dampening_constant=float("nan")), ValueError, "dampening_constant"),
        (dict(exponent="1"), TypeError, "exponent"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=2.0), TypeError, "batch_size"),
    ]:
        with pytest.raises(exc, match=arg):
            methods.get("ssd", **mk, **bad)
    with pytest.raises(ValueError, match="forget_set"):
        methods.get("ssd", **{**mk, "forget_set": {"image": np.zeros((0, 8, 8, 1))}})
    with pytest.raises(ValueError, match="hparams"):
        methods.get("ssd", **mk).init(net["original"], hparams={"alpha": 1.0})


# --------------------------------------------------------------------------
# Fisher forgetting
# --------------------------------------------------------------------------


def test_fisher_diagonal_known_answer():
    model = models.get_model("mlp", 3, hidden=(4,))
    apply_fn = models.make_apply_fn(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
    v = models.init(model, jax.random.key(0), x)
    got = methods.fisher_diagonal(
        apply_fn, v, {"image": x, "label": np.zeros(3)}, batch_size=2
    )

    @jax.jit
    def prob_and_grad(xi, y):
        def nll(p):
            out, _ = apply_fn({**v, "params": p}, xi[None], train=False)
            return -jax.nn.log_softmax(out[0])[y], jax.nn.softmax(out[0])[y]

        return jax.grad(nll, has_aux=True)(v["params"])

    want = jax.tree.map(jnp.zeros_like, v["params"])
    for i in range(3):
        for y in range(3):
            g, py = prob_and_grad(x[i], y)
            want = jax.tree.map(lambda w, gi, py=py: w + py * gi**2 / 3, want, g)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-12)


def test_fisher_noise_follows_the_reference_rule():
    params = {
        "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
        "block": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
    }
    f = {
        "head": {"kernel": jnp.array([[1.0, 1e-6, 4.0], [3.0, 1e-6, 4.0]]),
                 "bias": jnp.array([2.0, 1e-6, 1.0])},
        "block": {"kernel": jnp.array([[1.0, 1e-6, 4.0], [3.0, 1e-6, 4.0]]),
                  "bias": jnp.array([2.0, 1e-6, 1.0])},
    }  # fmt: skip
    a = 1e-6
    mean, var = methods.fisher_noise(params, f, alpha=a, forgotten_classes=[2])
    inv = lambda x, cap: np.minimum(1 / (np.asarray(x) + 1e-8), cap)  # noqa: E731
    # block kernel: mean over the input axis, no x10
    bk = a * inv(f["block"]["kernel"], 1e3).mean(0, keepdims=True)
    np.testing.assert_allclose(
        var["block"]["kernel"], np.broadcast_to(bk, (2, 3)), rtol=1e-6
    )
    np.testing.assert_allclose(
        var["block"]["bias"], 10 * a * inv(f["block"]["bias"], 1e3), rtol=1e-6
    )
    # head: cap 1e2, the forgotten unit 2 at mean 0 and variance 1e-4, all x10
    hk = a * inv(f["head"]["kernel"], 1e2).mean(0, keepdims=True)
    hk[:, 2] = 1e-4
    np.testing.assert_allclose(
        var["head"]["kernel"], 10 * np.broadcast_to(hk, (2, 3)), rtol=1e-6
    )
    hb = a * inv(f["head"]["bias"], 1e2)
    hb[2] = 1e-4
    np.testing.assert_allclose(var["head"]["bias"], 10 * hb, rtol=1e-6)
    np.testing.assert_array_equal(mean["head"]["kernel"][:, 2], 0.0)
    np.testing.assert_array_equal(mean["head"]["bias"], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(mean["block"]["kernel"], 1.0)
    # elementwise rule: alpha * min(1 / (F + 1e-8), 1e3), nothing else
    _, var_e = methods.fisher_noise(params, f, alpha=a, rule="elementwise")
    np.testing.assert_allclose(
        var_e["head"]["kernel"], a * inv(f["head"]["kernel"], 1e3), rtol=1e-6
    )


def _fisher(net, **kw):
    small = net["small"]
    return methods.get(
        "fisher",
        apply_fn=net["apply_fn"],
        retain_set=small["retain"],
        forget_set=small["forget"],
        **kw,
    )


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_fisher_noise_has_the_formula_variance(net):
    v = net["original"]
    m = _fisher(net, alpha=1e-3)  # class 3 is forgotten: small sets' labels
    assert 3 in set(net["small"]["forget"]["label"])
    f = methods.fisher_diagonal(net["apply_fn"], v, net["small"]["retain"])
    mean, var = methods.fisher_noise(v["params"], f, alpha=1e-3, forgotten_classes=[3])
    z = []
    for i in range(10):
        new = m.init(v, key=jax.random.key(i)).variables["params"]
        z += [(np.asarray(x) - mu) / np.sqrt(s) for x, mu, s in zip(
            jax.tree.leaves(new), jax.tree.leaves(mean), jax.tree.leaves(var),
            strict=True,
        )]  # fmt: skip
    z = np.concatenate([a.ravel() for a in z])
    # over ten thousand standard normal draws
    assert z.size > 10_000
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 6 * math.sqrt(2 / z.size)


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_fisher_alpha_zero_and_keys(net):
    v = net["original"]
    m = _fisher(net, class_rule=False)
    s0 = m.init(v, key=jax.random.key(1), hparams={"alpha": 0.0})
    assert _equal(s0.variables, v)  # no noise at all
    a = m.init(v, key=jax.random.key(1))
    b = m.init(v, key=jax.random.key(1))
    c = m.init(v, key=jax.random.key(2))
    assert _equal(a.variables, b.variables)
    assert not _equal(a.variables["params"], c.variables["params"])
    assert not _equal(a.variables["params"], v["params"])
    # With the class rule and alpha = 0, only the forgotten head unit moves.
    s1 = _fisher(net).init(v, key=jax.random.key(1), hparams={"alpha": 0.0})
    new, old = s1.variables["params"], v["params"]
    assert _equal({k: x for k, x in new.items() if k != "head"},
                  {k: x for k, x in old.items() if k != "head"})  # fmt: skip
    cols = np.arange(10) != 3
    np.testing.assert_array_equal(
        new["head"]["kernel"][:, cols], old["head"]["kernel"][:, cols]
    )
    assert 0 < np.abs(np.asarray(new["head"]["kernel"][:, 3])).max() < 0.2
    after, _ = jax.jit(m.step)(a, _batch(net["split"]), jax.random.key(0))
    assert _equal(after.variables, a.variables)


@pytest.mark.parametrize("net", ["mlp"], indirect=True)
def test_fisher_validation(net):
    mk = dict(apply_fn=net["apply_fn"])
    with pytest.raises(ValueError, match="retain_set"):
        methods.get("fisher", **mk)
    mk["retain_set"] = net["small"]["retain"]
    for bad, exc, arg in [
        (dict(alpha=-1.0), ValueError, "alpha"),
        (dict(max_inverse=0.0), ValueError, "max_inverse"),
        (dict(rule="diag"), ValueError, "rule"),
        (dict(class_rule="yes"), TypeError, "class_rule"),
        (dict(batch_size=-2), ValueError, "batch_size"),
    ]:
        with pytest.raises(exc, match=arg):
            methods.get("fisher", **mk, **bad)
    with pytest.raises(ValueError, match="key"):
        methods.get("fisher", **mk).init(net["original"])
