"""DLFD: the monitor's attacker, the perturbation, dynamic forgetting, variants."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, methods, models
from jaxunlearn import eval as ev

BS = 16


@pytest.fixture(scope="module")
def split():
    return data.split(data.load("digits"), "random", seed=0)


MODELS = {
    "mlp": lambda: models.get_model("mlp", 10, hidden=(16,)),
    "cnn": lambda: models.get_model("cnn", 10, widths=(4, 8)),
}


def _setup(kind, split):
    model = MODELS[kind]()
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    return model, models.make_apply_fn(model), v


def _batch(split, n_real=BS, pad=0, garbage=0.0):
    def part(s, off):
        x = np.asarray(s["image"][off : off + n_real], np.float32)
        y = np.asarray(s["label"][off : off + n_real], np.int32)
        m = np.ones(n_real, bool)
        if pad:
            x = np.concatenate([x, np.full((pad, *x.shape[1:]), garbage, np.float32)])
            y = np.concatenate([y, np.zeros(pad, np.int32)])
            m = np.concatenate([m, np.zeros(pad, bool)])
        return {
            "image": jnp.asarray(x),
            "label": jnp.asarray(y),
            "mask": jnp.asarray(m),
        }

    return {"retain": part(split.retain, 0), "forget": part(split.forget, 0)}


def _dlfd(apply_fn, split, **kw):
    base = dict(
        forget_set=split.forget,
        val_set=split.val,
        perturb_steps=3,
        step_size=0.05,
        monitor_size=32,
        learning_rate=0.05,
        sinkhorn_iterations=5,  # compile time grows with the unrolled solve
    )
    return methods.get("dlfd", apply_fn=apply_fn, **{**base, **kw})


# ------------------------------------------------------------------ monitor
@pytest.mark.parametrize("shift", [0.0, 0.5, 2.0])
def test_loss_mia_accuracy_matches_sklearn_attacker(shift):
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(shift, 1, 300)
    ours = float(jax.jit(ev.loss_mia_accuracy)(a, b))
    ref = ev.mia_logreg(a, b)["accuracy"]
    assert abs(ours - ref) < 0.04, (ours, ref)


def test_loss_mia_accuracy_ignores_masked_rows_and_vmaps():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 64), rng.normal(1, 1, 64)
    plain = ev.loss_mia_accuracy(a, b)
    pa = np.concatenate([a, np.full(16, 1e6)])
    pb = np.concatenate([b, np.full(8, -1e6)])
    wa = np.arange(80) < 64
    wb = np.arange(72) < 64
    padded = ev.loss_mia_accuracy(pa, pb, where_member=wa, where_nonmember=wb)
    np.testing.assert_allclose(padded, plain, atol=1e-6)
    # interleaved padding: folds are dealt over the real examples only
    ia = np.where(np.arange(128) % 2 == 0, np.repeat(a, 2), -1e6)
    padded = ev.loss_mia_accuracy(ia, b, where_member=np.arange(128) % 2 == 0)
    np.testing.assert_allclose(padded, plain, atol=1e-6)
    batch = jax.vmap(ev.loss_mia_accuracy)(jnp.stack([a, b]), jnp.stack([b, a]))
    np.testing.assert_allclose(batch[0], plain, atol=1e-6)
    # symmetric labels swap: the attacker is as good either way
    np.testing.assert_allclose(batch[1], plain, atol=0.05)


def test_loss_mia_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="folds"):
        ev.loss_mia_accuracy(np.zeros(4), np.zeros(4), folds=1)
    with pytest.raises(ValueError, match="member_losses"):
        ev.loss_mia_accuracy(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="where_nonmember"):
        ev.loss_mia_accuracy(np.zeros(4), np.zeros(4), where_nonmember=np.ones(3, bool))


# ------------------------------------------------------------------ method
# Tracing and compiling a DLFD step costs seconds (the unrolled Sinkhorn solve
# inside the sign-gradient loop), so each configuration is compiled once per
# module and the tests share it; behaviour is steered through hparams.


@pytest.fixture(scope="module")
def compiled(split):
    cache = {}

    def get(kind, **kw):
        key = (kind, tuple(sorted(kw.items())))
        if key not in cache:
            model, apply_fn, v = _setup(kind, split)
            m = _dlfd(apply_fn, split, **kw)
            cache[key] = (m, jax.jit(m.step), v, apply_fn)
        return cache[key]

    return get


PAPER = {"dynamic": False, "track_ot_grad": True}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_zero_step_size_is_finetuning(kind, split, compiled):
    """With alpha = 0 the perturbed batch is the clean batch, so DLFD's model
    step is exactly fine-tuning's (same optimiser, same batch)."""
    m, step, v, apply_fn = compiled(kind, **PAPER)
    ft = methods.get(
        "finetune",
        apply_fn=apply_fn,
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=5e-4,
    )
    batch = _batch(split, pad=4)
    s, mt = step(
        m.init(v, num_steps=10, hparams={"step_size": 0.0}), batch, jax.random.key(1)
    )
    f, _ = jax.jit(ft.step)(ft.init(v), batch, jax.random.key(1))
    chex.assert_trees_all_close(s.variables, f.variables, atol=1e-6)
    assert float(mt["perturbed"]) == 1.0
    # a positive step size moves the images, hence the model
    s2, m2 = step(m.init(v, num_steps=10), batch, jax.random.key(1))
    diff = jax.tree.map(lambda a, b: jnp.abs(a - b).max(), s2.variables, f.variables)
    assert max(jax.tree.leaves(diff)) > 1e-6
    assert float(m2["ot_grad_norm"]) > 0.0  # the paper's OT term is live


def test_reference_code_ot_gradient_is_exactly_zero(split, compiled):
    m, step, v, _ = compiled("mlp", **PAPER, **methods.DLFD_REFERENCE_CODE)
    _, metrics = step(m.init(v, num_steps=10), _batch(split, pad=4), jax.random.key(2))
    assert float(metrics["ot_grad_norm"]) == 0.0
    assert np.isfinite(float(metrics["ot_loss"]))
    assert float(metrics["perturbed"]) == 1.0


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_padded_slots_change_nothing(kind, split, compiled):
    """Padded retain and forget slots carry no transport mass, no loss and no
    BatchNorm statistics: garbage pixels there change nothing."""
    m, step, v, _ = compiled(kind, **PAPER)
    st = m.init(v, num_steps=10)
    a, ma = step(st, _batch(split, pad=4, garbage=0.0), jax.random.key(3))
    b, mb = step(st, _batch(split, pad=4, garbage=7.0), jax.random.key(3))
    chex.assert_trees_all_close(a.variables, b.variables, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(ma["ot_loss"], mb["ot_loss"], rtol=1e-4)
    # an all-padding retain batch is a no-op for the whole state
    empty = _batch(split, pad=4)
    empty["retain"] = {**empty["retain"], "mask": jnp.zeros(BS + 4, bool)}
    new, metrics = step(st, empty, jax.random.key(0))
    chex.assert_trees_all_equal(new, st)
    assert float(metrics["perturbed"]) == 0.0


def test_dynamic_switch_latches_or_redecides(split, compiled):
    """``threshold`` is a hyperparameter: 0 forces "not yet forgotten"
    (perturb), 1 forces "forgotten" (fine-tune). The paper's latch never
    perturbs again after the first switch; the code re-decides every batch.
    Also: the monitor's period and the classification-weight ramp."""
    batch = _batch(split, pad=4)
    seen = {}
    for switch, every in (("latch", 1), ("per_batch", 2)):
        m, step, v, _ = compiled(
            "mlp",
            switch=switch,
            monitor_every=every,
            ce_weight=(0.25, 1.0),
            select_checkpoint=True,
        )
        st = m.init(v, num_steps=4)
        flags, ran, lam = [], [], []
        for thr in (0.0, 1.0, 0.0, 0.0):
            st = dataclasses.replace(
                st, hparams={**st.hparams, "threshold": jnp.float32(thr)}
            )
            st, metrics = step(st, batch, jax.random.key(4))
            flags.append(float(metrics["perturbed"]))
            ran.append(float(metrics["monitor_ran"]))
            lam.append(float(metrics["ce_weight"]))
            assert 0.0 <= float(metrics["forget_score"]) <= 1.0
        seen[switch] = flags
        assert ran == ([1.0] * 4 if every == 1 else [1.0, 0.0, 1.0, 0.0])
        np.testing.assert_allclose(lam, [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
    assert seen["latch"] == [1.0, 0.0, 0.0, 0.0]
    assert seen["per_batch"] == [1.0, 0.0, 1.0, 1.0]


def test_checkpoint_selection_keeps_best_eligible_state(split, compiled):
    m, step, v, _ = compiled(
        "mlp",
        switch="latch",
        monitor_every=1,
        ce_weight=(0.25, 1.0),
        select_checkpoint=True,
    )
    st = m.init(v, num_steps=4, hparams={"save_threshold": 1.0})
    # before any step nothing was selected: the live variables come back
    chex.assert_trees_all_equal(methods.dlfd_selected(st), st.variables)
    st, _ = step(st, _batch(split, pad=4), jax.random.key(0))
    # candidates are the updated models (score bound 1.0: the first is kept)
    chex.assert_trees_all_equal(methods.dlfd_selected(st), st.variables)
    first = st.variables
    st, _ = step(st, _batch(split, pad=4), jax.random.key(1))
    best = first if float(st.extra["best_acc"]) < 0 else methods.dlfd_selected(st)
    assert float(st.extra["best_acc"]) >= 0
    chex.assert_trees_all_equal(
        best, first if best is first else methods.dlfd_selected(st)
    )
    # a bound no score meets selects nothing
    s0 = m.init(v, num_steps=4, hparams={"save_threshold": 0.0})
    s0 = dataclasses.replace(
        s0, hparams={**s0.hparams, "save_threshold": jnp.float32(-1.0)}
    )
    s0, _ = step(s0, _batch(split, pad=4), jax.random.key(0))
    chex.assert_trees_all_equal(methods.dlfd_selected(s0), s0.variables)
    # stacked (replica) states: each replica falls back on its own
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), st, s0)
    picked = methods.dlfd_selected(stacked)
    chex.assert_trees_all_equal(
        jax.tree.map(lambda x: x[0], picked), methods.dlfd_selected(st)
    )
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[1], picked), s0.variables)


def test_code_order_decides_on_the_previous_updates_score(split, compiled):
    """``monitor_at="after"`` (the code): the score measured after batch k's
    update decides batch k + 1, and the first batch always perturbs."""
    m, step, v, _ = compiled("mlp", switch="per_batch", monitor_at="after")
    st = m.init(v, num_steps=4)
    flags, scores = [], []
    for thr in (1.0, 1.0, 0.0):
        st = dataclasses.replace(
            st, hparams={**st.hparams, "threshold": jnp.float32(thr)}
        )
        st, metrics = step(st, _batch(split, pad=4), jax.random.key(0))
        flags.append(float(metrics["perturbed"]))
        scores.append(float(metrics["forget_score"]))
        np.testing.assert_allclose(st.extra["forget_score"], scores[-1])
    # step 0: no score yet (initialised above any threshold) -> perturb even
    # at threshold 1; step 1: the post-update score < 1 -> fine-tune;
    # step 2: threshold 0 -> perturb
    assert flags == [1.0, 0.0, 1.0]
    assert all(0.0 <= x < 1.0 for x in scores)


def test_step_size_sweep_vmaps(split, compiled):
    m, step, v, _ = compiled("mlp", **PAPER)
    batch = _batch(split, pad=4)
    states = [m.init(v, num_steps=5, hparams={"step_size": a}) for a in (0.0, 0.1)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    vs, _ = jax.jit(jax.vmap(m.step, in_axes=(0, None, None)))(
        stacked, batch, jax.random.key(0)
    )
    for i, s in enumerate(states):
        one, _ = step(s, batch, jax.random.key(0))
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], vs.variables),
            one.variables,
            atol=1e-5,
            rtol=1e-5,
        )


def test_bad_arguments_name_themselves(split):
    _, apply_fn, _ = _setup("mlp", split)
    for kw, name in (
        ({"perturb_steps": 0}, "perturb_steps"),
        ({"step_size": -1.0}, "step_size"),
        ({"threshold": 2.0}, "threshold"),
        ({"features": "pixels"}, "features"),
        ({"ot_on": "both"}, "ot_on"),
        ({"switch": "never"}, "switch"),
        ({"clamp": (1.0, 0.0)}, "clamp"),
        ({"ce_weight": (0.0,)}, "ce_weight"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"val_set": None}, "val_set"),
    ):
        with pytest.raises((ValueError, TypeError), match=name):
            _dlfd(apply_fn, split, **kw)
    with pytest.raises(TypeError, match="perturb_steps"):
        _dlfd(apply_fn, split, perturb_steps=2.5)
    m = _dlfd(apply_fn, split)
    v = models.init(MODELS["mlp"](), jax.random.key(0), split.retain["image"][:1])
    with pytest.raises(ValueError, match="num_steps"):
        m.init(v)
    # without dynamic forgetting no monitor data is needed
    methods.get("dlfd", apply_fn=apply_fn, dynamic=False)


def test_select_branch_equals_cond_branch(split, compiled):
    """``perturb_branch="select"`` computes the perturbation and drops it when
    not needed; the results equal the ``lax.cond`` form's."""
    kw = dict(switch="latch", monitor_every=1, ce_weight=(0.25, 1.0))
    kw["select_checkpoint"] = True
    out = {}
    for branch in ("cond", "select"):
        extra = {} if branch == "cond" else {"perturb_branch": "select"}
        m, step, v, _ = compiled("mlp", **kw, **extra)
        st = m.init(v, num_steps=4)
        flags = []
        for thr in (0.0, 1.0):  # one perturbed step, one skipped
            st = dataclasses.replace(
                st, hparams={**st.hparams, "threshold": jnp.float32(thr)}
            )
            st, metrics = step(st, _batch(split, pad=4), jax.random.key(5))
            flags.append(float(metrics["perturbed"]))
        out[branch] = (st.variables, flags, float(metrics["ot_loss"]))
    assert out["cond"][1] == out["select"][1] == [1.0, 0.0]
    chex.assert_trees_all_close(out["cond"][0], out["select"][0], atol=1e-6)
    assert out["select"][2] == 0.0  # metrics of a skipped perturbation are 0
