"""Bad Teacher and SCRUB: frozen teachers, masks, step selection, validation."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import losses, methods, models

MODELS = {
    "mlp": dict(name="mlp", hidden=(16,)),
    "cnn": dict(name="cnn", widths=(8, 8)),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def net(request, digits_class_split):
    split = digits_class_split
    kw = dict(MODELS[request.param])
    model = models.get_model(kw.pop("name"), split.num_classes, **kw)
    example = jnp.asarray(split.retain["image"][:1])
    init_fn = jax.jit(lambda k: models.init(model, k, example))
    apply_fn = models.make_apply_fn(model)
    original = init_fn(jax.random.key(0))
    return dict(
        kind=request.param,
        split=split,
        model=model,
        apply_fn=apply_fn,
        init_fn=init_fn,
        original=original,
    )


def _part(s, start, n, pad=0, seed=0):
    """``n`` real rows of set ``s`` from ``start``, then ``pad`` garbage rows."""
    image = jnp.asarray(s["image"][start : start + n])
    label = jnp.asarray(s["label"][start : start + n])
    mask = jnp.ones(n, bool)
    if pad:
        rng = np.random.default_rng(seed)
        junk = 50.0 * rng.standard_normal((pad, *image.shape[1:]))
        image = jnp.concatenate([image, jnp.asarray(junk, image.dtype)])
        label = jnp.concatenate([label, jnp.asarray(rng.integers(0, 10, pad))])
        mask = jnp.concatenate([mask, jnp.zeros(pad, bool)])
    return {"image": image, "label": label.astype(jnp.int32), "mask": mask}


def _batch(split, n_retain=16, n_forget=12, forget_pad=0, start=0):
    return {
        "retain": _part(split.retain, start, n_retain),
        "forget": _part(split.forget, start, n_forget, pad=forget_pad),
    }


def _make(name, net, **kw):
    return methods.get(name, apply_fn=net["apply_fn"], init_fn=net["init_fn"], **kw)


def _init(m, net, **context):
    return m.init(net["original"], key=jax.random.key(7), **context)


def _with_student(state, variables):
    """The same state with another student (teachers untouched)."""
    return dataclasses.replace(state, variables=dict(variables))


def _trees_equal_bitwise(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


NAME_KW = [
    ("bad_teacher", {}),
    ("bad_teacher", {"variant": "dlfd_code"}),
    ("scrub", {"msteps": 1, "learning_rate": 0.05}),
    ("scrub", {"variant": "dlfd_code", "learning_rate": 0.05}),
]


@pytest.mark.parametrize("name,kw", NAME_KW)
def test_teachers_never_change(name, kw, net):
    m = _make(name, net, **kw)
    state = _init(m, net, steps_per_epoch=2)
    extra0 = jax.tree.map(lambda x: np.array(x, copy=True), state.extra)
    assert _trees_equal_bitwise(state.extra["teacher"], net["original"])
    step = jax.jit(m.step)
    for i in range(5):
        state, _ = step(state, _batch(net["split"], start=i), jax.random.key(i))
    assert _trees_equal_bitwise(state.extra, extra0)
    # ... while the student did move
    assert not _trees_equal_bitwise(
        state.variables["params"], net["original"]["params"]
    )


def _expected_stats(net, student, images, mask):
    _, new = net["apply_fn"](student, images, train=True, mask=mask)
    return new["batch_stats"]


@pytest.mark.parametrize("net", ["cnn"], indirect=True)  # the model with BatchNorm
@pytest.mark.parametrize("name,kw", NAME_KW)
def test_student_batch_stats_come_from_student_forward_only(name, kw, net):
    m = _make(name, net, **kw)
    state = _init(m, net, steps_per_epoch=2)
    # A student unlike the teachers: any teacher forward in training mode, or
    # a teacher's returned variables, would show in the statistics.
    student = net["init_fn"](jax.random.key(99))
    state = _with_student(state, student)
    batch = _batch(net["split"], forget_pad=4)
    r, f = batch["retain"], batch["forget"]
    if name == "bad_teacher" and kw.get("variant") != "dlfd_code":
        images = jnp.concatenate([r["image"], f["image"]])
        mask = jnp.concatenate([r["mask"], f["mask"]])
    elif name == "scrub":  # step 0 is a max step: forget batch
        images, mask = f["image"], f["mask"]
    else:  # dlfd bad teacher: retain only
        images, mask = r["image"], r["mask"]
    want = _expected_stats(net, student, images, mask)
    new, _ = jax.jit(m.step)(state, batch, jax.random.key(1))
    chex.assert_trees_all_close(
        new.variables["batch_stats"], want, rtol=1e-5, atol=1e-6
    )
    assert not _trees_equal_bitwise(want, student["batch_stats"])
    if name == "scrub":  # step 1 is a min step: retain batch
        student2 = new.variables
        want2 = _expected_stats(net, student2, r["image"], r["mask"])
        new2, met = jax.jit(m.step)(new, batch, jax.random.key(2))
        assert float(met["max_step"]) == 0.0
        chex.assert_trees_all_close(
            new2.variables["batch_stats"], want2, rtol=1e-5, atol=1e-6
        )


def test_bad_teacher_zero_loss_when_student_is_teacher_and_no_forget(net):
    # SGD: Adam would blow float noise in a ~0 gradient up to steps of size lr.
    m = _make("bad_teacher", net, tx=optax.sgd(0.1))
    state = _init(m, net)
    batch = _batch(net["split"])
    batch["forget"]["mask"] = jnp.zeros_like(batch["forget"]["mask"])
    # drive with retain: the step is taken
    new, met = jax.jit(m.step)(state, batch, jax.random.key(1))
    assert int(new.step) == 1
    if net["kind"] == "mlp":
        assert abs(float(met["loss"])) < 1e-6
        assert float(met["grad_norm"]) < 1e-5
        assert float(met["forget_kl"]) == 0.0
        chex.assert_trees_all_close(
            new.variables["params"], net["original"]["params"], atol=1e-6
        )
    else:
        # BatchNorm: the student runs in training mode (batch statistics over
        # the real rows, forget rows masked out), the teacher in eval mode.
        r, f = batch["retain"], batch["forget"]
        logits, _ = net["apply_fn"](
            net["original"],
            jnp.concatenate([r["image"], f["image"]]),
            train=True,
            mask=jnp.concatenate([r["mask"], f["mask"]]),
        )
        t, _ = net["apply_fn"](net["original"], r["image"], train=False)
        want = losses.masked_mean(
            losses.kl_divergence(logits[: len(r["mask"])], t), r["mask"]
        )
        np.testing.assert_allclose(float(met["loss"]), float(want), rtol=1e-5)
    # With the forget rows in, the incompetent teacher makes the loss positive.
    _, met2 = jax.jit(m.step)(state, _batch(net["split"]), jax.random.key(1))
    assert float(met2["forget_kl"]) > 1e-3
    assert float(met2["loss"]) > float(met["loss"]) + 1e-4


def test_bad_teacher_loss_is_the_combined_batch_mean(net):
    m = _make("bad_teacher", net, temperature=2.0)
    state = _init(m, net)
    batch = _batch(net["split"], n_retain=16, n_forget=4, forget_pad=3)
    _, met = jax.jit(m.step)(state, batch, jax.random.key(1))
    n_r, n_f = 16, 4
    want = (n_r * met["retain_kl"] + n_f * met["forget_kl"]) / (n_r + n_f)
    np.testing.assert_allclose(float(met["loss"]), float(want), rtol=1e-5)


def test_incompetent_teacher_is_a_fresh_model_from_the_init_key(net):
    m = _make("bad_teacher", net)
    s1 = m.init(net["original"], key=jax.random.key(1))
    s2 = m.init(net["original"], key=jax.random.key(2))
    bad1 = s1.extra["incompetent"]
    assert _trees_equal_bitwise(bad1, net["init_fn"](jax.random.key(1)))
    assert not _trees_equal_bitwise(bad1["params"], net["original"]["params"])
    assert not _trees_equal_bitwise(bad1["params"], s2.extra["incompetent"]["params"])
    # The student starts from the original.
    assert _trees_equal_bitwise(s1.variables, net["original"])
    # Its predictions differ from the original's on real data.
    x = jnp.asarray(net["split"].forget["image"][:32])
    a, _ = net["apply_fn"](net["original"], x)
    b, _ = net["apply_fn"](bad1, x)
    assert float(jnp.mean(jnp.abs(a - b))) > 0.1 * float(jnp.mean(jnp.abs(a)))


def test_bad_teacher_dlfd_code_loss_ignores_forget(net):
    m = _make("bad_teacher", net, variant="dlfd_code")
    state = _init(m, net)
    assert float(state.hparams["temperature"]) == 4.0
    step = jax.jit(m.step)
    b1 = _batch(net["split"], start=0)
    b2 = {**b1, "forget": _part(net["split"].forget, 30, 12)}
    s1, m1 = step(state, b1, jax.random.key(1))
    s2, m2 = step(state, b2, jax.random.key(1))
    assert _trees_equal_bitwise(s1.variables, s2.variables)
    want = m1["retain_ce"] + m1["good_kl"] - m1["bad_kl"]
    np.testing.assert_allclose(float(m1["loss"]), float(want), rtol=1e-6)
    assert float(m1["bad_kl"]) > 0.0


def _sets(n_forget, n_retain):
    """Stand-in forget / retain sets: only their sizes matter to SCRUB."""
    return {
        "forget_set": {"label": np.zeros(n_forget, np.int32)},
        "retain_set": {"label": np.zeros(n_retain, np.int32)},
    }


def _scrub_schedule(m, state, net, n):
    """``max_step`` of the first ``n`` steps, checking each step's loss."""
    hp = state.hparams
    step = jax.jit(m.step)
    seen = []
    for i in range(n):
        state, met = step(state, _batch(net["split"], start=i), jax.random.key(i))
        seen.append(int(met["max_step"]))
        if met["max_step"]:
            np.testing.assert_allclose(met["loss"], -met["forget_kl"], rtol=1e-6)
            assert float(met["retain_ce"]) == 0.0
        else:
            want = hp["gamma"] * met["retain_ce"] + hp["alpha"] * met["retain_kl"]
            np.testing.assert_allclose(met["loss"], want, rtol=1e-6)
            assert float(met["forget_kl"]) == 0.0
            assert float(met["retain_ce"]) > 0.0
    return seen


@pytest.mark.parametrize("variant", ["original", "dlfd_code"])
def test_scrub_epoch_structure_max_pass_then_min_pass(variant, net):
    # n_forget / n_retain = 1/4, 8 steps per epoch: the forget pass is 2 steps.
    m = _make("scrub", net, msteps=2, variant=variant, **_sets(10, 40))
    state = _init(m, net, steps_per_epoch=8, num_steps=24)
    keys = ("max_phase_steps", "cycle_steps", "cycle_max_steps")
    extra = {k: state.extra[k] for k in keys}
    assert {k: int(v) for k, v in extra.items()} == {
        "max_phase_steps": 16,
        "cycle_steps": 8,
        "cycle_max_steps": 2,
    }
    assert all(v.dtype == jnp.int32 and v.shape == () for v in extra.values())
    if variant == "original":
        seen = _scrub_schedule(m, state, net, 24)
    else:  # the dlfd_code losses differ; only the schedule is checked
        step = jax.jit(m.step)
        seen = []
        for i in range(24):
            state, met = step(state, _batch(net["split"]), jax.random.key(i))
            seen.append(int(met["max_step"]))
    epoch = [1, 1, 0, 0, 0, 0, 0, 0]
    assert seen == epoch + epoch + [0] * 8  # after msteps epochs: only min steps


def test_scrub_max_steps_per_epoch_from_the_context_sets(net):
    split = net["split"]
    n_f, n_r = len(split.forget["label"]), len(split.retain["label"])
    # As a caller of `methods.get` passes them: the sets are context kwargs.
    m = _make("scrub", net, forget_set=split.forget, retain_set=split.retain)
    for spe in (1, 7, 93):
        state = _init(m, net, steps_per_epoch=spe)
        assert int(state.extra["cycle_steps"]) == spe
        assert int(state.extra["cycle_max_steps"]) == min(
            math.ceil(n_f * spe / n_r), spe
        )
        assert int(state.extra["max_phase_steps"]) == 2 * spe
    # The paper's forget pass: 556 forget, 2957 retain, batch 32.
    m = _make("scrub", net, **_sets(556, 2957))
    state = _init(m, net, steps_per_epoch=math.ceil(2957 / 32))
    assert int(state.extra["cycle_max_steps"]) == math.ceil(556 / 32) == 18
    # A forget set larger than retain: whole max-phase epochs of max steps.
    m = _make("scrub", net, **_sets(50, 10))
    state = _init(m, net, steps_per_epoch=4)
    assert int(state.extra["cycle_max_steps"]) == 4
    # An empty forget set: no max steps.
    m = _make("scrub", net, **_sets(0, 10))
    state = _init(m, net, steps_per_epoch=4)
    assert int(state.extra["cycle_max_steps"]) == 0


def test_scrub_explicit_max_steps_per_epoch_overrides(net):
    m = _make("scrub", net, msteps=1, max_steps_per_epoch=3, **_sets(10, 40))
    state = _init(m, net, steps_per_epoch=5)
    assert int(state.extra["cycle_max_steps"]) == 3
    assert _scrub_schedule(m, state, net, 10) == [1, 1, 1, 0, 0] + [0] * 5
    # ... also without the sets, and capped at the epoch length
    m = _make("scrub", net, max_steps_per_epoch=3)
    state = _init(m, net, steps_per_epoch=6)
    assert [int(state.extra[k]) for k in ("cycle_steps", "cycle_max_steps")] == [6, 3]
    m = _make("scrub", net, max_steps_per_epoch=9)
    state = _init(m, net, steps_per_epoch=6)
    assert int(state.extra["cycle_max_steps"]) == 6
    m = _make("scrub", net, max_steps_per_epoch=0, **_sets(10, 40))
    state = _init(m, net, steps_per_epoch=6)
    assert int(state.extra["cycle_max_steps"]) == 0


@pytest.mark.parametrize(
    "kw",
    [{}, {"forget_set": _sets(10, 40)["forget_set"]}, _sets(10, 0)],
    ids=["no_sets", "forget_only", "empty_retain"],
)
def test_scrub_fallback_alternates_step_by_step(kw, net):
    # Without the set sizes (no sets, one set, an empty retain set): max / min
    # alternate one by one during the max phase, then only min steps.
    m = _make("scrub", net, msteps=2, **kw)
    state = _init(m, net, steps_per_epoch=2, num_steps=8)
    assert int(state.extra["max_phase_steps"]) == 4
    assert [int(state.extra[k]) for k in ("cycle_steps", "cycle_max_steps")] == [2, 1]
    assert _scrub_schedule(m, state, net, 8) == [1, 0, 1, 0, 0, 0, 0, 0]


def test_scrub_phase_without_steps_per_epoch_and_msteps_zero(net):
    step_of = lambda m, s: jax.jit(m.step)(s, _batch(net["split"]), jax.random.key(0))  # noqa: E731
    # No steps_per_epoch: the epoch length is unknown, so alternate for the
    # whole run, even with the sets or an explicit max_steps_per_epoch.
    for kw in ({}, _sets(10, 40), {"max_steps_per_epoch": 3}):
        m = _make("scrub", net, **kw)
        state = _init(m, net)
        assert int(state.extra["cycle_steps"]) == 2
        assert int(state.extra["cycle_max_steps"]) == 1
        state = dataclasses.replace(state, step=jnp.asarray(10**6, jnp.int32))
        assert float(step_of(m, state)[1]["max_step"]) == 1.0
        state = dataclasses.replace(state, step=jnp.asarray(10**6 + 1, jnp.int32))
        assert float(step_of(m, state)[1]["max_step"]) == 0.0
    m0 = _make("scrub", net, msteps=0, **_sets(10, 40))
    state0 = _init(m0, net, steps_per_epoch=5)
    assert float(step_of(m0, state0)[1]["max_step"]) == 0.0


@pytest.mark.parametrize("variant", ["original", "dlfd_code"])
def test_scrub_max_steps_increase_forget_kl(variant, net):
    m = _make("scrub", net, variant=variant, learning_rate=0.1)
    state = _init(m, net)
    # Move the student off the teacher (at the teacher the KL has zero gradient).
    leaves, tree = jax.tree.flatten(state.variables["params"])
    keys = jax.random.split(jax.random.key(3), len(leaves))
    noisy = [x + 0.01 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    params = jax.tree.unflatten(tree, noisy)
    state = _with_student(state, {**state.variables, "params": params})
    batch = _batch(net["split"])
    f = batch["forget"]

    temp = state.hparams["temperature"]

    def forget_kl(variables):  # the max step's d, in eval mode
        s, _ = net["apply_fn"](variables, f["image"])
        t, _ = net["apply_fn"](net["original"], f["image"])
        kl = losses.kl_divergence(s, t, temperature=temp)
        return float(losses.masked_mean(kl, f["mask"]))

    kls = [forget_kl(state.variables)]
    step = jax.jit(m.step)
    for i in range(3):
        state = dataclasses.replace(state, step=jnp.zeros((), jnp.int32))
        state, met = step(state, batch, jax.random.key(i))
        assert float(met["max_step"]) == 1.0
        kls.append(forget_kl(state.variables))
    assert kls[-1] > 1.5 * kls[0], kls
    if net["kind"] == "mlp":  # no train/eval mode gap: each step ascends d
        assert kls[0] < kls[1] < kls[2] < kls[3], kls


@pytest.mark.parametrize(
    "name,kw",
    [("bad_teacher", {}), ("scrub", {}), ("scrub", {"variant": "dlfd_code"})],
)
def test_padded_forget_slots_do_not_change_the_step(name, kw, net):
    # SGD: Adam would blow float noise in a ~0 gradient component (a conv bias
    # before BatchNorm) up to a step of size lr, hiding what is compared.
    m = _make(name, net, tx=optax.sgd(0.05), **kw)
    state = _init(m, net, steps_per_epoch=4)  # step 0: a SCRUB max step
    step = jax.jit(m.step)
    plain = _batch(net["split"], n_forget=10)
    padded = _batch(net["split"], n_forget=10, forget_pad=6)
    s1, m1 = step(state, plain, jax.random.key(1))
    s2, m2 = step(state, padded, jax.random.key(1))
    chex.assert_trees_all_close(s1.variables, s2.variables, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(m1, m2, rtol=1e-5, atol=1e-6)
    # ... whereas a real change to the forget batch does change it.
    other = _batch(net["split"], n_forget=10)
    other["forget"] = _part(net["split"].forget, 40, 10)
    s3, _ = step(state, other, jax.random.key(1))
    assert not _trees_equal_bitwise(s1.variables["params"], s3.variables["params"])


def test_adam_tx_is_adam_at_the_swept_rate():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"w": jnp.array([0.3, -0.1, 2.0]) * (i + 1)} for i in range(3)]
    tx, lr = methods.adam_tx(None, learning_rate=3e-3, weight_decay=5e-4)
    ref = optax.chain(optax.add_decayed_weights(5e-4), optax.adam(3e-3))
    p1, p2 = params, params
    s1, s2 = tx.init(p1), ref.init(p2)
    for g in grads:
        u1, s1 = tx.update(g, s1, p1)
        p1 = optax.apply_updates(p1, jax.tree.map(lambda u: lr * u, u1))
        u2, s2 = ref.update(g, s2, p2)
        p2 = optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-6)


def test_learning_rate_is_sweepable(net):
    m = _make("bad_teacher", net)
    state = _init(m, net)
    assert float(state.hparams["learning_rate"]) == pytest.approx(1e-4)
    batch = _batch(net["split"])
    slow, _ = m.step(state, batch, jax.random.key(0))
    fast_state = m.init(
        net["original"], key=jax.random.key(7), hparams={"learning_rate": 1e-3}
    )
    fast, _ = m.step(fast_state, batch, jax.random.key(0))
    d = lambda s: jax.tree.map(
        lambda a, b: a - b, s.variables["params"], state.variables["params"]
    )  # noqa: E731
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: 10 * x, d(slow)), d(fast), rtol=1e-3, atol=2e-6
    )


@pytest.mark.parametrize(
    "name,kw,exc,match",
    [
        ("bad_teacher", {"init_fn": None}, ValueError, "init_fn"),
        ("bad_teacher", {"init_fn": 3}, TypeError, "init_fn"),
        ("bad_teacher", {"temperature": 0.0}, ValueError, "temperature"),
        ("bad_teacher", {"temperature": "4"}, TypeError, "temperature"),
        ("bad_teacher", {"variant": "paper"}, ValueError, "variant"),
        ("bad_teacher", {"learning_rate": -1.0}, ValueError, "learning_rate"),
        ("bad_teacher", {"weight_decay": float("nan")}, ValueError, "weight_decay"),
        ("bad_teacher", {"tx": "adam"}, TypeError, "tx"),
        ("bad_teacher", {"apply_fn": None}, TypeError, "apply_fn"),
        ("scrub", {"alpha": -0.1}, ValueError, "alpha"),
        ("scrub", {"gamma": float("inf")}, ValueError, "gamma"),
        ("scrub", {"msteps": 1.5}, ValueError, "msteps"),
        ("scrub", {"msteps": -1}, ValueError, "msteps"),
        ("scrub", {"msteps": True}, ValueError, "msteps"),
        ("scrub", {"temperature": -4.0}, ValueError, "temperature"),
        ("scrub", {"variant": "x"}, ValueError, "variant"),
        ("scrub", {"learning_rate": 0.0}, ValueError, "learning_rate"),
        ("scrub", {"momentum": 2.0}, ValueError, "momentum"),
        ("scrub", {"tx": object()}, TypeError, "tx"),
        ("scrub", {"apply_fn": "f"}, TypeError, "apply_fn"),
        ("scrub", {"max_steps_per_epoch": -1}, ValueError, "max_steps_per_epoch"),
        ("scrub", {"max_steps_per_epoch": 1.5}, ValueError, "max_steps_per_epoch"),
        ("scrub", {"max_steps_per_epoch": True}, ValueError, "max_steps_per_epoch"),
        ("scrub", {"forget_set": [1, 2]}, ValueError, "forget_set"),
        ("scrub", {"retain_set": {"x": 1}}, ValueError, "retain_set"),
        ("scrub", {"alphaa": 0.1}, TypeError, "alphaa"),
    ],
)
def test_bad_arguments_raise_naming_them(name, kw, exc, match):
    model = models.get_model("mlp", 3, hidden=(4,))
    args = dict(
        apply_fn=models.make_apply_fn(model),
        init_fn=lambda k: models.init(model, k, jnp.zeros((1, 2, 2, 1))),
    )
    args.update(kw)
    with pytest.raises(exc, match=match):
        methods.get(name, **args)
