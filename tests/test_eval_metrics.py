"""Known-answer tests of the scalar metrics, logit confidence and seed statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.eval._metrics import (
    forgetting_score,
    logit_confidence,
    logit_confidence_from_probs,
    nomus,
    utv,
)
from jaxunlearn.eval._stats import aggregate, bootstrap_ci, mean_std

# --- forgetting score and NoMUS -------------------------------------


def test_forgetting_score_known_values():
    assert forgetting_score(0.5) == 0.0
    assert forgetting_score(1.0) == 1.0
    assert forgetting_score(0.0) == 1.0
    assert forgetting_score(0.6) == pytest.approx(0.2)
    assert forgetting_score(0.4) == pytest.approx(0.2)  # two-sided
    assert forgetting_score(np.float32(0.75)) == pytest.approx(0.5)


def test_nomus_reproduces_dlfd_table1():
    # Table 1, original age model: acc 0.6329, FS (un-doubled) 0.1923 -> 0.6241.
    assert nomus(0.6329, 2 * 0.1923) == pytest.approx(0.6241, abs=1e-4)
    # Same through forgetting_score of the MIA accuracy 0.5 + 0.1923.
    fs = forgetting_score(0.5 + 0.1923)
    assert nomus(0.6329, fs) == pytest.approx(0.6241, abs=1e-4)
    # Retrained age model: 0.6050, FS 0.0767 -> 0.7258.
    assert nomus(0.6050, 2 * 0.0767) == pytest.approx(0.7258, abs=1e-4)
    assert nomus(1.0, 0.0) == 1.0 and nomus(0.0, 1.0) == 0.0


@pytest.mark.parametrize("bad", [1.2, -0.1, math.nan, math.inf])
def test_forgetting_score_and_nomus_reject_out_of_range(bad):
    with pytest.raises(ValueError, match="mia_accuracy"):
        forgetting_score(bad)
    with pytest.raises(ValueError, match="test_accuracy"):
        nomus(bad, 0.1)
    with pytest.raises(ValueError, match="forgetting_score"):
        nomus(0.5, bad)


def test_forgetting_score_rejects_non_scalars():
    with pytest.raises(TypeError, match="mia_accuracy"):
        forgetting_score(np.array([0.5, 0.6]))
    with pytest.raises(TypeError, match="mia_accuracy"):
        forgetting_score("0.5")
    with pytest.raises(TypeError, match="test_accuracy"):
        nomus(True, 0.1)


# --- UTV ------------------------------------------------------------


def test_utv_identical_is_zero_and_disjoint_is_one(rng):
    p = rng.dirichlet(np.ones(5), size=30)
    assert utv(p, p) == 0.0
    eye = np.eye(4)
    assert utv(eye, eye[[1, 2, 3, 0]]) == 1.0


def test_utv_known_value_and_symmetry(rng):
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.25, 0.5], [0.0, 1.0, 0.0]])
    assert utv(p, q) == pytest.approx((0.5 + 1.0) / 2)
    a, b = rng.dirichlet(np.ones(6), 20), rng.dirichlet(np.ones(6), 20)
    assert utv(a, b) == pytest.approx(utv(b, a))
    # float32 softmax rows are accepted.
    logits = rng.normal(size=(10, 100)).astype(np.float32)
    sm = np.asarray(jax.nn.softmax(logits))
    assert utv(sm, sm) == 0.0


def test_utv_bad_input():
    p = np.array([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="p_unlearned rows must be probability"):
        utv(p, np.array([[0.5, 0.6], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="p_retrained has negative"):
        utv(np.array([[1.5, -0.5]]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="shape"):
        utv(p, p[:1])
    with pytest.raises(ValueError, match=r"p_retrained must be a non-empty \[n, C\]"):
        utv(p[0], p[0])
    with pytest.raises(ValueError, match="p_unlearned contains non-finite"):
        utv(p, np.array([[np.nan, 0.5], [0.2, 0.8]]))


# --- logit confidence -----------------------------------------------


def test_logit_confidence_finite_when_probabilities_saturate():
    logits = jnp.array([[100.0, -100.0], [100.0, -100.0]], jnp.float32)
    p = jax.nn.softmax(logits)
    assert float(p[0, 0]) == 1.0 and float(p[0, 1]) == 0.0  # saturated in float32
    phi = logit_confidence(logits, jnp.array([0, 1]))
    assert phi.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(phi), [200.0, -200.0])
    assert bool(
        jnp.all(jnp.isfinite(jax.grad(lambda z: logit_confidence(z, 0))(logits[0])))
    )


def test_logit_confidence_matches_naive_formula(rng):
    logits = rng.normal(scale=3.0, size=(64, 7))
    labels = rng.integers(0, 7, 64)
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p[np.arange(64), labels]
    naive = np.log(py) - np.log1p(-py)
    got = logit_confidence(logits.astype(np.float32), labels)
    np.testing.assert_allclose(np.asarray(got), naive, rtol=1e-5, atol=1e-4)
    got_p = logit_confidence_from_probs(p.astype(np.float32), labels)
    np.testing.assert_allclose(np.asarray(got_p), naive, rtol=1e-4, atol=1e-3)


def test_logit_confidence_jit_and_vmap(rng):
    logits = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, 16))
    eager = logit_confidence(logits, labels)
    jitted = jax.jit(logit_confidence)(logits, labels)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6)
    vmapped = jax.vmap(logit_confidence)(logits, labels)
    loop = jnp.stack([logit_confidence(logits[i], labels[i]) for i in range(16)])
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(loop), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), rtol=1e-6)
    probs = jax.nn.softmax(logits)
    np.testing.assert_allclose(
        np.asarray(jax.jit(logit_confidence_from_probs)(probs, labels)),
        np.asarray(logit_confidence_from_probs(probs, labels)),
        rtol=1e-6,
    )


def test_logit_confidence_from_probs_is_finite_at_0_and_1():
    p = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    phi = logit_confidence_from_probs(p, jnp.array([0, 0]))
    assert bool(jnp.all(jnp.isfinite(phi)))
    assert float(phi[0]) > 60 and float(phi[1]) < -60


def test_logit_confidence_bad_input():
    z = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="labels has shape"):
        logit_confidence(z, jnp.zeros(3, int))
    with pytest.raises(TypeError, match="labels must be integers"):
        logit_confidence(z, jnp.zeros(4))
    with pytest.raises(ValueError, match="labels must lie"):
        logit_confidence(z, jnp.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_confidence(jnp.zeros((4, 1)), jnp.zeros(4, int))
    with pytest.raises(ValueError, match="logits contains non-finite"):
        logit_confidence(z.at[0, 0].set(jnp.nan), jnp.zeros(4, int))
    with pytest.raises(ValueError, match="probs contains non-finite"):
        logit_confidence_from_probs(z.at[0, 0].set(jnp.inf), jnp.zeros(4, int))
    with pytest.raises(ValueError, match="probs has negative"):
        logit_confidence_from_probs(z.at[0, 0].set(-1.0), jnp.zeros(4, int))
    with pytest.raises(ValueError, match=r"probs must be \[..., C\]"):
        logit_confidence_from_probs(jnp.float32(1.0), jnp.zeros((), int))


# --- statistics over seeds ------------------------------------------


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    m, s = mean_std([4.0])
    assert m == 4.0 and math.isnan(s)
    with pytest.raises(ValueError, match="values is empty"):
        mean_std([])
    with pytest.raises(ValueError, match="values contains non-finite"):
        mean_std([1.0, math.nan])
    with pytest.raises(ValueError, match="1-D"):
        mean_std(np.ones((2, 2)))


def test_bootstrap_ci_contains_mean_and_shrinks(rng):
    small = rng.normal(0.7, 0.05, 5)
    large = rng.normal(0.7, 0.05, 500)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    # Roughly the normal-theory width for the large sample.
    se = large.std(ddof=1) / np.sqrt(large.size)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap_ci(large, seed=3) == bootstrap_ci(large, seed=3)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))


def test_bootstrap_ci_bad_input():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(TypeError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=10.5)
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([1.0, math.inf])


def test_aggregate_shape_and_values():
    runs = [
        {"acc": 0.9, "mia": np.float32(0.5), "diverged": False, "name": "a"},
        {"acc": 0.8, "mia": np.float64(0.6), "diverged": True, "name": "b"},
        {"acc": 0.7, "mia": np.array(0.7), "diverged": False, "name": "c", "x": 1},
    ]
    out = aggregate(runs, n_resamples=2000)
    assert list(out) == ["acc", "mia", "diverged", "x"]
    for stats in out.values():
        assert set(stats) == {"mean", "std", "ci_low", "ci_high", "n"}
    assert out["acc"]["mean"] == pytest.approx(0.8)
    assert out["acc"]["std"] == pytest.approx(0.1)
    assert out["acc"]["n"] == 3
    assert out["acc"]["ci_low"] <= 0.8 <= out["acc"]["ci_high"]
    assert out["diverged"]["mean"] == pytest.approx(1 / 3)
    assert out["x"]["n"] == 1 and math.isnan(out["x"]["std"])


def test_aggregate_propagates_nan_and_rejects_bad_input():
    out = aggregate([{"acc": 0.9}, {"acc": math.nan}])
    assert out["acc"]["n"] == 2 and math.isnan(out["acc"]["mean"])
    with pytest.raises(ValueError, match="results is empty"):
        aggregate([])
    with pytest.raises(TypeError, match="results must be a sequence"):
        aggregate({"acc": 0.9})
    with pytest.raises(TypeError, match=r"results\[1\]"):
        aggregate([{"acc": 0.9}, 0.8])
    with pytest.raises(TypeError, match="'acc' mixes"):
        aggregate([{"acc": 0.9}, {"acc": "high"}])
