"""ROC summary, LiRA, U-LiRA and RMIA on synthetic scores with known answers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from jaxunlearn.eval._lira import lira, rmia, roc_metrics, ulira

# --- roc_metrics ----------------------------------------------------


def test_roc_auc_matches_sklearn_with_ties(rng):
    for _ in range(5):
        scores = rng.integers(0, 20, 3000).astype(float)  # many ties
        member = rng.random(3000) < 0.3
        assert roc_metrics(scores, member)["auc"] == pytest.approx(
            roc_auc_score(member, scores), abs=1e-12
        )
    scores = rng.normal(size=500)
    member = rng.random(500) < 0.5
    assert roc_metrics(scores, member)["auc"] == pytest.approx(
        roc_auc_score(member, scores), abs=1e-12
    )


def test_roc_random_scores_at_chance(rng):
    r = roc_metrics(rng.normal(size=4000), rng.random(4000) < 0.5)
    assert abs(r["auc"] - 0.5) < 0.05
    assert 0.5 <= r["balanced_accuracy"] < 0.55
    assert r["tpr_at_1%_fpr"] < 0.05


def test_roc_swapped_labels_flip_auc_exactly(rng):
    scores = np.round(rng.normal(size=1000), 1)
    member = rng.random(1000) < 0.4
    a = roc_metrics(scores, member)["auc"]
    b = roc_metrics(scores, ~member)["auc"]
    assert a + b == pytest.approx(1.0, abs=1e-14)
    assert a == pytest.approx(1.0 - roc_metrics(-scores, member)["auc"], abs=1e-14)


def test_roc_separated_and_low_fpr_against_sklearn_curve(rng):
    member = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
    scores = np.r_[rng.normal(3, 1, 2000), rng.normal(0, 1, 2000)]
    r = roc_metrics(scores, member)
    assert r["auc"] > 0.98 and r["balanced_accuracy"] > 0.93
    fpr, tpr, _ = roc_curve(member, scores, drop_intermediate=False)
    assert r["tpr_at_1%_fpr"] == pytest.approx(tpr[fpr <= 0.01].max())
    assert r["tpr_at_0.1%_fpr"] == pytest.approx(tpr[fpr <= 0.001].max())
    assert r["balanced_accuracy"] == pytest.approx(np.max((tpr + 1 - fpr) / 2))
    perfect = roc_metrics([0.0, 1.0, 2.0, 3.0], [False, False, True, True])
    assert perfect == {
        "auc": 1.0,
        "balanced_accuracy": 1.0,
        "tpr_at_0.1%_fpr": 1.0,
        "tpr_at_1%_fpr": 1.0,
    }


def test_roc_accepts_jax_arrays_int_labels_and_infinities(rng):
    r = roc_metrics(jnp.array([0.1, 0.9, 0.4]), jnp.array([0, 1, 1]))
    assert r["auc"] == 1.0
    scores = rng.normal(size=200)
    scores[:10], scores[10:20] = np.inf, -np.inf
    member = rng.random(200) < 0.5
    assert roc_metrics(scores, member)["auc"] == pytest.approx(
        roc_auc_score(member, np.clip(scores, -1e9, 1e9)), abs=1e-12
    )


def test_roc_bad_input():
    with pytest.raises(ValueError, match="scores must be 1-D"):
        roc_metrics(np.zeros((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="is_member has shape"):
        roc_metrics(np.zeros(3), np.array([True, False]))
    with pytest.raises(ValueError, match="scores contains nan"):
        roc_metrics(np.array([0.0, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError, match="both members and non-members"):
        roc_metrics(np.zeros(3), np.ones(3, bool))
    with pytest.raises(TypeError, match="is_member must be boolean"):
        roc_metrics(np.zeros(2), np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="is_member must be boolean"):
        roc_metrics(np.zeros(2), np.array([0, 2]))


# --- LiRA -----------------------------------------------------------


def _gaussian_world(seed, n=2000, k=64, d=1.0):
    """Per-example means mu_i; IN ~ N(mu_i + d, 1), OUT ~ N(mu_i, 1)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n)
    shadow_in = rng.random((k, n)) < 0.5
    shadow = mu + d * shadow_in + rng.normal(size=(k, n))
    member = np.zeros(n, bool)
    member[rng.permutation(n)[: n // 2]] = True
    target = mu + d * member + rng.normal(size=n)
    return (
        jnp.asarray(target, jnp.float32),
        jnp.asarray(shadow, jnp.float32),
        jnp.asarray(shadow_in),
        member,
        mu,
    )


def test_lira_reaches_the_optimal_auc():
    d = 1.0
    target, shadow, shadow_in, member, mu = _gaussian_world(0, d=d)
    optimal = norm.cdf(d / np.sqrt(2))  # equal variances: threshold s - mu_i
    # The empirical AUC of the optimal statistic on this very sample removes
    # sampling noise (standard error ~0.01 at 1000 + 1000 targets).
    oracle = roc_metrics(np.asarray(target) - mu, member)["auc"]
    online = jax.jit(lira)(target, shadow, shadow_in)
    assert online.shape == (2000,) and bool(jnp.all(jnp.isfinite(online)))
    auc_online = roc_metrics(online, member)["auc"]
    assert abs(auc_online - optimal) < 0.02
    assert abs(auc_online - oracle) < 0.02
    # Pooled variance is the right model here and gets at least as close.
    fixed = jax.jit(functools.partial(lira, fixed_variance=True))
    auc_fixed = roc_metrics(fixed(target, shadow, shadow_in), member)["auc"]
    assert abs(auc_fixed - oracle) < 0.012
    # Offline uses only the ~32 OUT shadows per example. With equal variances
    # its one-sided test is monotone in (s - mu_i) / sd_i, i.e. optimal up to
    # the noise of the estimated mu_i and sd_i, so it loses little here; the
    # looser bound (0.03) allows for that extra per-example scaling noise.
    offline = jax.jit(functools.partial(lira, online=False))
    auc_off = roc_metrics(offline(target, shadow, shadow_in), member)["auc"]
    assert abs(auc_off - optimal) < 0.03
    assert abs(auc_off - oracle) < 0.02


def test_lira_orientation_and_chance():
    target, shadow, shadow_in, member, _ = _gaussian_world(1, n=1000, k=32, d=2.0)
    auc = roc_metrics(lira(target, shadow, shadow_in), member)["auc"]
    assert auc > 0.85  # members score higher
    # No membership signal in the target: chance.
    _, shadow, shadow_in, member, mu = _gaussian_world(2, n=4000, k=32, d=2.0)
    rng = np.random.default_rng(3)
    null_target = jnp.asarray(mu + 1.0 + rng.normal(size=4000), jnp.float32)
    auc = roc_metrics(lira(null_target, shadow, shadow_in), member)["auc"]
    assert abs(auc - 0.5) < 0.05


def test_lira_jit_matches_eager_and_vmap_matches_loop():
    target, shadow, shadow_in, _, _ = _gaussian_world(4, n=200, k=16)
    for online, fixed in ((True, False), (False, True)):
        fn = functools.partial(lira, online=online, fixed_variance=fixed)
        np.testing.assert_allclose(
            np.asarray(jax.jit(fn)(target, shadow, shadow_in)),
            np.asarray(fn(target, shadow, shadow_in)),
            rtol=1e-5,
            atol=1e-5,
        )
    targets = jnp.stack([target, target + 0.5, target - 1.0])
    batched = jax.vmap(lira, in_axes=(0, None, None))(targets, shadow, shadow_in)
    loop = jnp.stack([lira(t, shadow, shadow_in) for t in targets])
    np.testing.assert_allclose(
        np.asarray(batched), np.asarray(loop), rtol=1e-5, atol=1e-5
    )


def test_lira_statistics_by_hand():
    # 3 examples, 4 shadows; example 2 has no IN shadow, example 1 has one.
    shadow = jnp.array(
        [[1.0, 5.0, 0.0], [3.0, 1.0, 1.0], [0.0, 2.0, 2.0], [2.0, 3.0, 3.0]]
    )
    shadow_in = jnp.array(
        [
            [True, True, False],
            [True, False, False],
            [False, False, False],
            [False, False, False],
        ]
    )
    target = jnp.array([2.0, 4.0, 1.5])
    got = np.asarray(lira(target, shadow, shadow_in))
    # Example 0: IN {1, 3}, OUT {0, 2}; ddof=0 stds are 1 and 1.
    want0 = norm.logpdf(2.0, 2.0, 1.0) - norm.logpdf(2.0, 1.0, 1.0)
    assert got[0] == pytest.approx(want0, rel=1e-5)
    # Pooled IN variance: only example 0 has >= 1 IN with spread: ((1-2)^2 +
    # (3-2)^2) / (2 + 1) = 2/3; example 1 (one IN shadow) uses it.
    # Example 1: mu_in 5, OUT {1, 2, 3}: mu 2, var 2/3.
    sd = np.sqrt(2 / 3)
    want1 = norm.logpdf(4.0, 5.0, sd) - norm.logpdf(4.0, 2.0, sd)
    assert got[1] == pytest.approx(want1, rel=1e-5)
    # Example 2: no IN; mu_in = mu_out + mean shift over examples with both
    # ((2 - 1) + (5 - 2)) / 2 = 2 -> mu_in = 1.5 + 2; pooled IN sd.
    var_out2 = np.var([0.0, 1.0, 2.0, 3.0])
    want2 = norm.logpdf(1.5, 3.5, sd) - norm.logpdf(1.5, 1.5, np.sqrt(var_out2))
    assert got[2] == pytest.approx(want2, rel=1e-5)
    offline = np.asarray(lira(target, shadow, shadow_in, online=False))
    assert offline[1] == pytest.approx(norm.logcdf((4.0 - 2.0) / sd), rel=1e-5)


def test_lira_missing_shadows_stay_finite():
    target, shadow, shadow_in, member, _ = _gaussian_world(5, n=500, k=2, d=2.0)
    assert bool(jnp.any(shadow_in.sum(0) == 0)) and bool(jnp.any(shadow_in.sum(0) == 2))
    for online, fixed in ((True, False), (False, True)):
        fn = functools.partial(lira, online=online, fixed_variance=fixed)
        assert bool(jnp.all(jnp.isfinite(fn(target, shadow, shadow_in))))
    # Offline with OUT shadows only.
    out = lira(target, shadow, jnp.zeros_like(shadow_in), online=False)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_lira_bad_input():
    t, sh, m = jnp.zeros(5), jnp.zeros((4, 5)), jnp.ones((4, 5), bool)
    m = m.at[0].set(False)
    with pytest.raises(ValueError, match="target_scores must be 1-D"):
        lira(t[None], sh, m)
    with pytest.raises(ValueError, match=r"shadow_scores must be 2-D \[K, n=5\]"):
        lira(t, sh[:, :3], m)
    with pytest.raises(ValueError, match="shadow_in has shape"):
        lira(t, sh, m[:2])
    with pytest.raises(TypeError, match="shadow_in must be boolean"):
        lira(t, sh, m.astype(int))
    with pytest.raises(ValueError, match="target_scores contains non-finite"):
        lira(t.at[0].set(jnp.nan), sh, m)
    with pytest.raises(ValueError, match="shadow_scores contains non-finite"):
        lira(t, sh.at[0, 0].set(jnp.inf), m)
    with pytest.raises(ValueError, match="no IN shadows"):
        lira(t, sh, jnp.zeros_like(m))
    with pytest.raises(ValueError, match="no OUT shadows"):
        lira(t, sh, jnp.ones_like(m), online=False)
    with pytest.raises(ValueError, match="eps"):
        lira(t, sh, m, eps=0.0)
    with pytest.raises(TypeError, match="target_scores must be a real array"):
        lira(t > 0, sh, m)


# --- U-LiRA ---------------------------------------------------------


def _ulira_world(seed, shift, n=500, models=8):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n)
    unlearned = mu + shift + rng.normal(size=(models, n))
    retrained = mu + rng.normal(size=(models, n))
    target_u = mu + shift + rng.normal(size=n)
    target_r = mu + rng.normal(size=n)
    return target_u, unlearned, retrained, target_r


def test_ulira_at_chance_when_unlearning_matches_retraining():
    t_u, u, r, t_r = _ulira_world(0, shift=0.0)
    out = jax.jit(ulira)(t_u, u, r, retrained_target_scores=t_r)
    assert out["scores"].shape == (500,)
    assert abs(float(out["heldout_balanced_accuracy"]) - 0.5) < 0.05
    assert abs(float(out["heldout_auc"]) - 0.5) < 0.05
    assert abs(float(out["target_unlearned_rate"]) - 0.5) < 0.1
    assert abs(float(out["target_balanced_accuracy"]) - 0.5) < 0.07


def test_ulira_near_one_when_separated():
    t_u, u, r, t_r = _ulira_world(1, shift=6.0)
    out = ulira(t_u, u, r, retrained_target_scores=t_r)
    assert float(out["heldout_balanced_accuracy"]) > 0.97
    assert float(out["heldout_auc"]) > 0.99
    assert float(out["target_unlearned_rate"]) > 0.97
    assert float(out["target_balanced_accuracy"]) > 0.97
    # A retrained target is not flagged: its rate is about 0.
    retrained_target = ulira(t_r, u, r)
    assert float(retrained_target["target_unlearned_rate"]) < 0.03


def test_ulira_threshold_and_rates_by_hand():
    t_u, u, r, _ = _ulira_world(2, shift=1.0, n=50, models=5)
    out = ulira(t_u, u, r, n_holdout=2, fixed_variance=True)
    mu_u, mu_r = u[:3].mean(0), r[:3].mean(0)
    var_u = ((u[:3] - mu_u) ** 2).sum() / (50 * 2)
    var_r = ((r[:3] - mu_r) ** 2).sum() / (50 * 2)

    def llr(x):
        return norm.logpdf(x, mu_u, np.sqrt(var_u)) - norm.logpdf(
            x, mu_r, np.sqrt(var_r)
        )

    np.testing.assert_allclose(np.asarray(out["scores"]), llr(t_u), rtol=1e-4)
    pos, neg = llr(u[3:]).ravel(), llr(r[3:]).ravel()
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    fpr, tpr, thr = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    best = np.argmin(np.abs(fpr + tpr - 1))
    assert float(out["threshold"]) == pytest.approx(thr[best], rel=1e-4)
    assert float(out["heldout_balanced_accuracy"]) == pytest.approx(
        (tpr[best] + 1 - fpr[best]) / 2
    )
    assert float(out["heldout_auc"]) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))
    assert float(out["target_unlearned_rate"]) == pytest.approx(
        np.mean(llr(t_u) >= thr[best])
    )


def test_ulira_bad_input():
    t_u, u, r, _ = _ulira_world(3, shift=0.0, n=20, models=3)
    with pytest.raises(ValueError, match="unlearned_scores has 2 models"):
        ulira(t_u, u[:2], r)
    with pytest.raises(ValueError, match="retrained_scores has 3 models"):
        ulira(t_u, np.r_[u, u], r, n_holdout=2)
    with pytest.raises(ValueError, match=r"retrained_scores must be 2-D \[N_r, n=20\]"):
        ulira(t_u, u, r[:, :5])
    with pytest.raises(ValueError, match="target_scores must be 1-D"):
        ulira(u, u, r)
    with pytest.raises(ValueError, match="n_holdout"):
        ulira(t_u, u, r, n_holdout=0)
    with pytest.raises(ValueError, match="n_holdout"):
        ulira(t_u, u, r, n_holdout=True)
    with pytest.raises(ValueError, match="retrained_target_scores has shape"):
        ulira(t_u, u, r, retrained_target_scores=t_u[:3])
    with pytest.raises(ValueError, match="unlearned_scores contains non-finite"):
        bad = u.copy()
        bad[0, 0] = np.nan
        ulira(t_u, bad, r)


# --- RMIA -----------------------------------------------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _rmia_world(seed, boost, n=2000, m=1000, refs=4):
    rng = np.random.default_rng(seed)
    member = np.zeros(n, bool)
    member[: n // 2] = True
    base_x, base_z = rng.normal(size=n), rng.normal(size=m)
    ref_x = _sigmoid(base_x + 0.5 * rng.normal(size=(refs, n)))
    ref_z = _sigmoid(base_z + 0.5 * rng.normal(size=(refs, m)))
    tgt_x = _sigmoid(base_x + boost * member + 0.5 * rng.normal(size=n))
    tgt_z = _sigmoid(base_z + 0.5 * rng.normal(size=m))
    return tgt_x, ref_x, tgt_z, ref_z, member


def test_rmia_identical_models_at_chance():
    _, ref_x, _, ref_z, member = _rmia_world(0, boost=0.0)
    # Target identical to every reference model: all ratios 1, all scores tie.
    scores = rmia(ref_x[0], ref_x[[0, 0, 0]], ref_z[0], ref_z[[0, 0, 0]])
    assert roc_metrics(scores, member)["auc"] == 0.5
    # Target drawn like the references (no membership effect): chance.
    tgt_x, ref_x, tgt_z, ref_z, member = _rmia_world(1, boost=0.0)
    assert (
        abs(roc_metrics(rmia(tgt_x, ref_x, tgt_z, ref_z), member)["auc"] - 0.5) < 0.05
    )


def test_rmia_detects_boosted_members():
    tgt_x, ref_x, tgt_z, ref_z, member = _rmia_world(2, boost=1.5)
    scores = jax.jit(rmia)(tgt_x, ref_x, tgt_z, ref_z)
    assert scores.shape == (2000,)
    assert bool(jnp.all((scores >= 0) & (scores <= 1)))
    assert roc_metrics(scores, member)["auc"] > 0.8


def test_rmia_equals_pairwise_definition():
    tgt_x, ref_x, tgt_z, ref_z, _ = _rmia_world(3, boost=1.0, n=300, m=200)
    gamma = 1.5
    rx = tgt_x / ref_x.mean(0)
    rz = tgt_z / ref_z.mean(0)
    brute = np.mean(rx[:, None] / rz[None, :] > gamma, axis=1)
    got = np.asarray(rmia(tgt_x, ref_x, tgt_z, ref_z, gamma=gamma))
    # Same counts out of m = 200 (float32 vs float64 ratios may differ only
    # for pairs within rounding of the threshold).
    counts, brute_counts = np.round(got * 200), np.round(brute * 200)
    assert np.abs(counts - brute_counts).max() <= 1
    assert np.mean(counts == brute_counts) > 0.99
    # Zero probabilities stay finite.
    zero = rmia(np.zeros(3), np.zeros((2, 3)), np.full(4, 0.5), np.full((2, 4), 0.5))
    assert np.asarray(zero).tolist() == [0.0, 0.0, 0.0]


def test_rmia_bad_input():
    px, rx, pz, rz = (
        np.full(5, 0.5),
        np.full((2, 5), 0.5),
        np.full(4, 0.5),
        np.full((2, 4), 0.5),
    )
    with pytest.raises(ValueError, match="reference models"):
        rmia(px, rx, pz, rz[:1])
    with pytest.raises(ValueError, match=r"reference_probs must be 2-D \[R, n=5\]"):
        rmia(px, rx[:, :3], pz, rz)
    with pytest.raises(ValueError, match="population_target_probs must be 1-D"):
        rmia(px, rx, pz[None], rz)
    with pytest.raises(ValueError, match="target_probs must hold probabilities"):
        rmia(px * 3, rx, pz, rz)
    with pytest.raises(ValueError, match="population_reference_probs contains"):
        rmia(px, rx, pz, rz * np.nan)
    with pytest.raises(ValueError, match="gamma"):
        rmia(px, rx, pz, rz, gamma=0.0)
    with pytest.raises(ValueError, match="population_target_probs is empty"):
        rmia(px, rx, pz[:0], rz[:, :0])
