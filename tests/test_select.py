"""Tests for jaxunlearn.select (distributional unlearning, docs/methods_notes.md)."""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from jaxunlearn import select

_trapz = getattr(np, "trapezoid", None) or np.trapz


def _spd(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T + 0.5 * np.eye(dim)


# --------------------------------------------------------------------------
# Gaussian KL closed forms
# --------------------------------------------------------------------------


def test_gaussian_kl_matches_monte_carlo_multivariate():
    rng = np.random.default_rng(0)
    cov = _spd(rng, 3)
    mu_p = rng.normal(size=3)
    mu_q = mu_p + rng.normal(size=3)
    x = rng.multivariate_normal(mu_p, cov, size=200_000)
    log_ratio = stats.multivariate_normal(mu_p, cov).logpdf(
        x
    ) - stats.multivariate_normal(mu_q, cov).logpdf(x)
    mc = log_ratio.mean()
    se = log_ratio.std() / np.sqrt(x.shape[0])
    kl = float(select.gaussian_kl(mu_p, mu_q, cov))
    assert kl > 0.1
    assert abs(kl - mc) < max(5 * se, 0.02 * mc)
    # Exact float64 value (half the squared Mahalanobis distance).
    d = mu_p - mu_q
    np.testing.assert_allclose(kl, 0.5 * d @ np.linalg.solve(cov, d), rtol=1e-4)
    # Symmetric for a shared covariance.
    np.testing.assert_allclose(
        float(select.gaussian_kl(mu_q, mu_p, cov)), kl, rtol=1e-5
    )


def test_gaussian_kl_scalar_forms():
    assert float(select.gaussian_kl(0.0, 2.0, 1.0)) == pytest.approx(2.0)
    assert float(select.gaussian_kl(1.0, -2.0, 4.0)) == pytest.approx(9.0 / 8.0)
    mu_p, mu_q = jnp.array([0.0, 1.0, 2.0]), jnp.array([1.0, -1.0, 0.5])
    np.testing.assert_allclose(
        float(select.gaussian_kl(mu_p, mu_q, 2.0)),
        float(select.gaussian_kl(mu_p, mu_q, 2.0 * jnp.eye(3))),
        rtol=1e-6,
    )
    assert float(select.gaussian_kl(mu_p, mu_p, jnp.eye(3))) == 0.0


@pytest.mark.parametrize(
    "mp,sp,mq,sq",
    [
        (0.0, 1.0, 0.0, 2.0),
        (0.5, 0.7, -1.0, 1.3),
        (2.0, 1.5, 1.0, 0.6),
        (0.0, 1.0, 1.0, 1.0),
    ],
)
def test_gaussian_kl_general_matches_quadrature_1d(mp, sp, mq, sq):
    x = np.linspace(mp - 14 * sp, mp + 14 * sp, 400_001)
    logp = stats.norm.logpdf(x, mp, sp)
    logq = stats.norm.logpdf(x, mq, sq)
    quad = _trapz(np.exp(logp) * (logp - logq), x)
    got = float(select.gaussian_kl_general(mp, sp**2, mq, sq**2))
    np.testing.assert_allclose(got, quad, rtol=1e-4, atol=1e-6)
    # Independent closed form for 1-D Gaussians.
    ref = np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5
    np.testing.assert_allclose(quad, ref, rtol=1e-6, atol=1e-9)
    # Same value through the [1] / [1, 1] array path.
    got_arr = select.gaussian_kl_general(
        jnp.array([mp]), jnp.array([[sp**2]]), jnp.array([mq]), jnp.array([[sq**2]])
    )
    np.testing.assert_allclose(float(got_arr), got, rtol=1e-6)


def test_gaussian_kl_general_matches_monte_carlo_multivariate():
    rng = np.random.default_rng(1)
    cov_p, cov_q = _spd(rng, 3), _spd(rng, 3)
    mu_p, mu_q = rng.normal(size=3), rng.normal(size=3)
    x = rng.multivariate_normal(mu_p, cov_p, size=200_000)
    log_ratio = stats.multivariate_normal(mu_p, cov_p).logpdf(
        x
    ) - stats.multivariate_normal(mu_q, cov_q).logpdf(x)
    mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(x.shape[0])
    kl = float(select.gaussian_kl_general(mu_p, cov_p, mu_q, cov_q))
    assert kl > 0.1
    assert abs(kl - mc) < max(5 * se, 0.02 * mc)
    # Not symmetric once covariances differ.
    rev = float(select.gaussian_kl_general(mu_q, cov_q, mu_p, cov_p))
    assert abs(rev - kl) > 0.05


def test_gaussian_kl_general_reduces_to_shared_cov():
    rng = np.random.default_rng(2)
    cov = _spd(rng, 4)
    mu_p, mu_q = rng.normal(size=4), rng.normal(size=4)
    np.testing.assert_allclose(
        float(select.gaussian_kl_general(mu_p, cov, mu_q, cov)),
        float(select.gaussian_kl(mu_p, mu_q, cov)),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        float(select.gaussian_kl_general(mu_p, cov, mu_p, cov)), 0.0, atol=1e-5
    )


@pytest.mark.parametrize(
    "a,b,var", [(0.0, 1.3, 1.0), (-2.0, 0.5, 0.3), (4.0, 4.5, 7.0)]
)
def test_1d_kl_symmetric_for_shared_variance(a, b, var):
    ab = float(select.gaussian_kl(a, b, var))
    np.testing.assert_allclose(ab, float(select.gaussian_kl(b, a, var)), rtol=1e-6)
    np.testing.assert_allclose(ab, (a - b) ** 2 / (2 * var), rtol=1e-6)
    gen_ab = float(select.gaussian_kl_general(a, var, b, var))
    gen_ba = float(select.gaussian_kl_general(b, var, a, var))
    np.testing.assert_allclose(gen_ab, gen_ba, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gen_ab, ab, rtol=1e-4, atol=1e-6)


def test_gaussian_kl_general_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        select.gaussian_kl_general(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.eye(3))
    with pytest.raises(ValueError, match="shape mismatch"):
        select.gaussian_kl_general(jnp.zeros(3), jnp.eye(2), jnp.zeros(3), jnp.eye(2))


# --------------------------------------------------------------------------
# Pareto frontier (Prop. 1) and the optimal edit
# --------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, 0.3, 2.0])
def test_pareto_frontier_shape(delta):
    alphas = np.linspace(0.0, 10.0, 2001)
    eps = np.asarray(select.pareto_frontier(jnp.asarray(alphas), delta), np.float64)
    below = alphas <= delta
    np.testing.assert_array_equal(eps[below], 0.0)
    ref = (np.sqrt(alphas) - np.sqrt(delta)) ** 2
    np.testing.assert_allclose(eps[~below], ref[~below], rtol=1e-5, atol=1e-6)
    assert np.all(eps >= 0)
    assert np.all(np.diff(eps) >= -1e-6)  # non-decreasing
    assert np.all(np.diff(eps, 2) >= -1e-4)  # convex on the uniform grid
    # Continuity at alpha = delta.
    for h in (1e-3, 1e-2):
        assert float(select.pareto_frontier(delta + h, delta)) < 2 * h
    assert float(select.pareto_frontier(delta, delta)) == 0.0


def test_pareto_frontier_known_values():
    assert float(select.pareto_frontier(4.0, 1.0)) == pytest.approx(1.0)
    assert float(select.pareto_frontier(9.0, 1.0)) == pytest.approx(4.0)
    assert float(select.pareto_frontier(0.5, 1.0)) == 0.0
    assert float(select.pareto_frontier(3.0, 0.0)) == pytest.approx(3.0)


@pytest.mark.parametrize("mu2", [0.5, 2.0])
def test_pareto_frontier_brute_force_1d(mu2):
    # p1 = N(0, 1), p2 = N(mu2, 1), q = N(m, 1): min KL(p2||q) s.t. KL(p1||q) >= a.
    m = np.linspace(-12.0, 12.0, 2_400_001)
    kl1, kl2 = m**2 / 2, (mu2 - m) ** 2 / 2
    delta = mu2**2 / 2
    alphas = np.array([0.0, 0.5 * delta, delta, 1.5 * delta, 0.7, 2.0, 5.0, 20.0])
    brute = np.array([kl2[kl1 >= a].min() for a in alphas])
    got = np.asarray(select.pareto_frontier(jnp.asarray(alphas), delta), np.float64)
    np.testing.assert_allclose(got, brute, rtol=1e-3, atol=1e-4)
    assert got[-1] > 5.0  # not trivially zero


def test_optimal_edit_attains_frontier_multivariate():
    rng = np.random.default_rng(3)
    cov = _spd(rng, 3)
    assert not np.allclose(cov, np.diag(np.diag(cov)))
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    delta = float(select.gaussian_kl(mu1, mu2, cov))
    for alpha in (0.0, 0.5 * delta, delta, 1.3 * delta, 4.0 * delta, 10.0):
        m = select.optimal_edit(mu1, mu2, cov, alpha)
        np.testing.assert_allclose(
            float(select.gaussian_kl(mu1, m, cov)), max(alpha, delta), rtol=2e-4
        )
        np.testing.assert_allclose(
            float(select.gaussian_kl(mu2, m, cov)),
            float(select.pareto_frontier(alpha, delta)),
            rtol=2e-3,
            atol=1e-5,
        )
        # On the ray from mu1 through mu2, at or past mu2.
        s = (np.asarray(m) - mu1) / (mu2 - mu1)
        np.testing.assert_allclose(s, s[0], rtol=1e-4)
        assert s[0] >= 1 - 1e-5
    np.testing.assert_allclose(
        select.optimal_edit(mu1, mu2, cov, 0.5 * delta), mu2, rtol=1e-6
    )


def test_optimal_edit_beats_other_feasible_edits():
    # Any other mean reaching the same removal level pays more preservation KL.
    rng = np.random.default_rng(4)
    cov = _spd(rng, 2)
    mu1, mu2 = np.zeros(2), np.array([1.0, 0.5])
    delta = float(select.gaussian_kl(mu1, mu2, cov))
    alpha = 3.0 * delta
    best = float(
        select.gaussian_kl(mu2, select.optimal_edit(mu1, mu2, cov, alpha), cov)
    )
    chol = np.linalg.cholesky(cov)
    for ang in np.linspace(0, 2 * np.pi, 73):
        # Points at exactly KL(p1||q) = alpha: mu1 + sqrt(2 alpha) L u, |u| = 1.
        q = mu1 + np.sqrt(2 * alpha) * chol @ np.array([np.cos(ang), np.sin(ang)])
        assert float(select.gaussian_kl(mu2, q, cov)) >= best - 1e-4


def test_pareto_and_optimal_edit_jit_vmap():
    rng = np.random.default_rng(5)
    cov = jnp.asarray(_spd(rng, 3), jnp.float32)
    mu1 = jnp.asarray(rng.normal(size=3), jnp.float32)
    mu2 = jnp.asarray(rng.normal(size=3), jnp.float32)
    alphas = jnp.linspace(0.0, 6.0, 9)
    delta = select.gaussian_kl(mu1, mu2, cov)
    loop = np.array([float(select.pareto_frontier(a, delta)) for a in alphas])
    np.testing.assert_allclose(
        jax.jit(select.pareto_frontier)(alphas, delta), loop, rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.vmap(select.pareto_frontier, (0, None))(alphas, delta), loop, rtol=1e-6
    )
    edits = jax.jit(jax.vmap(lambda a: select.optimal_edit(mu1, mu2, cov, a)))(alphas)
    loop_edits = np.stack(
        [np.asarray(select.optimal_edit(mu1, mu2, cov, a)) for a in alphas]
    )
    np.testing.assert_allclose(edits, loop_edits, rtol=1e-5, atol=1e-6)


def test_pareto_rejects_negative_or_nan():
    with pytest.raises(ValueError, match="alpha"):
        select.pareto_frontier(-0.1, 1.0)
    with pytest.raises(ValueError, match="delta"):
        select.pareto_frontier(1.0, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        select.pareto_frontier(jnp.array([1.0, jnp.nan]), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        select.optimal_edit(0.0, 1.0, 1.0, -2.0)


# --------------------------------------------------------------------------
# Exponential families (Prop. 3)
# --------------------------------------------------------------------------


def _kl_bernoulli(a, b):
    return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))


def _kl_poisson(a, b):
    return a * np.log(a / b) - a + b


_NA = 6  # every alpha grid has this length, so each family compiles once
_BERN, _POIS = select.bernoulli(), select.poisson()
_GAUSS = {v: select.gaussian_known_variance(v) for v in (1.0, 2.5)}


@functools.partial(jax.jit, static_argnums=0)
def _frontier_jit(family, theta1, theta2, alphas):
    return jax.vmap(lambda a: select.exp_family_frontier(family, theta1, theta2, a))(
        alphas
    )


def _frontier(family, theta1, theta2, alphas):
    alphas = jnp.asarray(alphas, jnp.float32)
    return _frontier_jit(family, jnp.float32(theta1), jnp.float32(theta2), alphas)


@pytest.mark.parametrize("var,mu1,mu2", [(1.0, 0.0, 1.0), (2.5, 1.0, -0.5)])
def test_exp_family_gaussian_matches_pareto(var, mu1, mu2):
    fam = _GAUSS[var]
    delta = (mu1 - mu2) ** 2 / (2 * var)
    alphas = np.array([0.0, 0.5 * delta, delta, 1.2 * delta, 2.0, 5.0 * delta + 1.0])
    eps, theta_q, t = _frontier(fam, mu1 / var, mu2 / var, alphas)
    np.testing.assert_allclose(
        eps, select.pareto_frontier(jnp.asarray(alphas), delta), rtol=1e-4, atol=1e-6
    )
    assert float(eps[-1]) > 1.0
    # The optimum is the same mean as optimal_edit.
    edits = jax.vmap(lambda a: select.optimal_edit(mu1, mu2, var, a))(alphas)
    np.testing.assert_allclose(theta_q[:, 0] * var, edits, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(t) >= 0)
    # The vmapped curve agrees with a plain (un-jitted, un-vmapped) call.
    e3, th3, t3 = select.exp_family_frontier(fam, mu1 / var, mu2 / var, alphas[3])
    np.testing.assert_allclose(
        [e3, th3[0], t3], [eps[3], theta_q[3, 0], t[3]], rtol=1e-5
    )


@pytest.mark.parametrize("p1,p2", [(0.3, 0.5), (0.5, 0.3), (0.2, 0.7), (0.6, 0.65)])
def test_exp_family_bernoulli_brute_force(p1, p2):
    q = np.linspace(1e-6, 1 - 1e-6, 1_000_001)
    kl1, kl2 = _kl_bernoulli(p1, q), _kl_bernoulli(p2, q)
    delta = _kl_bernoulli(p1, p2)
    alphas = np.array([0.5 * delta, 1.5 * delta, 0.5, 1.0, 1.5, 2.0])
    brute = np.array([kl2[kl1 >= a].min() for a in alphas])
    eps, theta_q, t = _frontier(
        _BERN, np.log(p1 / (1 - p1)), np.log(p2 / (1 - p2)), alphas
    )
    np.testing.assert_allclose(eps, brute, rtol=2e-3, atol=1e-5)
    assert float(eps[-1]) > 0.1
    # Removal constraint is active beyond delta: KL(p1||q) = alpha.
    qq = np.asarray(jax.nn.sigmoid(theta_q[:, 0]), np.float64)
    active = alphas > delta
    np.testing.assert_allclose(_kl_bernoulli(p1, qq[active]), alphas[active], rtol=2e-3)
    # q lies beyond p2, on the far side from p1.
    assert np.all(np.sign(qq[active] - p2) == np.sign(p2 - p1))


@pytest.mark.parametrize("r1,r2", [(1.0, 2.0), (2.0, 1.0), (5.0, 3.0), (3.0, 3.5)])
def test_exp_family_poisson_brute_force(r1, r2):
    q = np.linspace(1e-4, 60.0, 1_000_001)
    kl1, kl2 = _kl_poisson(r1, q), _kl_poisson(r2, q)
    delta = _kl_poisson(r1, r2)
    alphas = np.array([0.5 * delta, 1.5 * delta, 0.5, 1.0, 2.0, 5.0])
    brute = np.array([kl2[kl1 >= a].min() for a in alphas])
    eps, _, _ = _frontier(_POIS, np.log(r1), np.log(r2), alphas)
    np.testing.assert_allclose(eps, brute, rtol=2e-3, atol=1e-5)
    assert float(eps[-1]) > 0.5


def test_exp_family_kl_matches_closed_forms():
    bern, pois = _BERN, _POIS
    for a, b in [(0.2, 0.6), (0.9, 0.4)]:
        got = bern.kl(bern.natural(jnp.array([a])), bern.natural(jnp.array([b])))
        np.testing.assert_allclose(float(got), _kl_bernoulli(a, b), rtol=1e-4)
    for a, b in [(1.0, 3.0), (7.0, 2.0)]:
        got = pois.kl(jnp.log(jnp.array([a])), jnp.log(jnp.array([b])))
        np.testing.assert_allclose(float(got), _kl_poisson(a, b), rtol=1e-4)
    np.testing.assert_allclose(
        np.asarray(bern.mean(jnp.array([0.0]))), [0.5], rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(pois.mean(jnp.log(jnp.array([4.0])))), [4.0], rtol=1e-5
    )


_GENERIC = {
    "gaussian": (
        _GAUSS[2.5],
        select.ExpFamily("g", lambda t: 1.25 * jnp.sum(t * t)),
        (0.2, -0.4),
    ),
    "poisson": (
        _POIS,
        select.ExpFamily("p", lambda t: jnp.sum(jnp.exp(t))),
        (np.log(1.5), np.log(3.0)),
    ),
    "bernoulli": (
        _BERN,
        select.ExpFamily(
            "b",
            lambda t: jnp.sum(jax.nn.softplus(t)),
            in_domain=lambda mu: jnp.all((mu > 0) & (mu < 1)),
        ),
        (np.log(0.3 / 0.7), 0.0),
    ),
}


@pytest.mark.parametrize("name", sorted(_GENERIC))
def test_exp_family_generic_newton_agrees(name):
    closed, generic, (th1, th2) = _GENERIC[name]
    assert generic.mean_to_natural is None
    # Newton inverse of the mean map.
    mu = closed.mean(jnp.array([0.7]))
    np.testing.assert_allclose(generic.natural(mu), [0.7], rtol=1e-4, atol=1e-5)
    delta = float(closed.kl(jnp.array([th1]), jnp.array([th2])))
    alphas = np.array([0.5 * delta, 1.5 * delta, 0.4, 0.8, 1.2, 1.5])
    e_closed, th_closed, t_closed = _frontier(closed, th1, th2, alphas)
    e_gen, th_gen, t_gen = _frontier(generic, th1, th2, alphas)
    assert np.all(np.isfinite(e_gen)) and float(e_gen[-1]) > 0.05
    np.testing.assert_allclose(e_gen, e_closed, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(th_gen, th_closed, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(t_gen, t_closed, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_exp_family_zero_below_delta_and_monotone(family):
    if family == "bernoulli":
        fam, th1, th2 = _BERN, np.log(0.25 / 0.75), np.log(0.4 / 0.6)
    else:
        fam, th1, th2 = _POIS, np.log(2.0), np.log(3.0)
    delta = float(fam.kl(jnp.array([th1]), jnp.array([th2])))
    low = np.array([0.0, 0.2 * delta, 0.4 * delta, 0.6 * delta, 0.8 * delta, delta])
    eps, theta_q, t = _frontier(fam, th1, th2, low)
    np.testing.assert_array_equal(eps, 0.0)
    np.testing.assert_array_equal(t, 0.0)
    np.testing.assert_allclose(theta_q[:, 0], th2, rtol=1e-6)
    grid = np.linspace(0.0, 3.0, 6 * _NA)
    eps, _, t = (np.concatenate(v) for v in zip(*(
        _frontier(fam, th1, th2, g) for g in grid.reshape(-1, _NA)
    )))  # fmt: skip
    assert np.all(np.diff(eps) >= -1e-6)
    assert np.all(np.diff(t) >= -1e-6)
    assert np.all(eps[grid > delta] > 0)
    assert np.all(np.diff(eps[grid > delta]) > 0)
    assert eps[-1] > 0.3


def test_exp_family_bad_input():
    fam = select.bernoulli()
    with pytest.raises(ValueError, match="alpha"):
        select.exp_family_frontier(fam, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="shape"):
        select.exp_family_frontier(fam, jnp.zeros(2), jnp.zeros(3), 1.0)


# --------------------------------------------------------------------------
# Removal bounds (Thms 1-2)
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n", "selective"))
def _simulate_jit(keys, mu2, deleted, *, n, selective):
    return jax.vmap(
        lambda k: select.simulate_removal(
            k, 0.0, mu2, 1.0, n, n, deleted, selective=selective
        )
    )(keys)


def _simulate(mu2, deleted, selective, *, n=200, num_keys=400, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_keys)
    alpha, eps = _simulate_jit(
        keys, jnp.float32(mu2), jnp.int32(deleted), n=n, selective=selective
    )
    return np.asarray(alpha), np.asarray(eps)


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize("mu2,frac", [(0.3, 0.5), (0.3, 0.9), (2.0, 0.5), (2.0, 0.9)])
def test_removal_bounds_hold_in_simulation(selective, mu2, frac):
    n1 = n2 = 200
    deleted = int(frac * n1)
    delta = 0.1
    bound = select.selective_removal_bound if selective else select.random_removal_bound
    a_bound, e_bound = (float(v) for v in bound(0.0, mu2, 1.0, n1, n2, deleted, delta))
    assert np.isfinite(e_bound) and e_bound > 0
    alpha, eps = _simulate(mu2, deleted, selective, n=n1)
    assert np.all(np.isfinite(alpha)) and np.all(np.isfinite(eps))
    ok = (alpha >= a_bound) & (eps <= e_bound)
    assert ok.mean() >= 1 - delta
    if mu2 == 2.0:
        assert a_bound > 0.3  # a non-trivial removal guarantee
    if not selective:
        # Random removal: mu_hat ~ N(w mu1 + (1 - w) mu2, 1 / m) exactly, so
        # E[eps] = w^2 Delta + 1 / (2 m) and E[alpha] = (1 - w)^2 Delta + 1 / (2 m).
        w = float(select.kept_weight(n1, n2, deleted))
        m, div = n1 - deleted + n2, mu2**2 / 2
        np.testing.assert_allclose(eps.mean(), w**2 * div + 0.5 / m, rtol=0.25)
        np.testing.assert_allclose(
            alpha.mean(), (1 - w) ** 2 * div + 0.5 / m, rtol=0.15
        )


def test_random_bound_matches_formula():
    mu1, mu2, sigma, n1, n2, delta = 0.5, 1.7, 1.3, 300, 500, 0.05
    deleted = np.array([0, 100, 250, 300])
    a, e = select.random_removal_bound(
        mu1, mu2, sigma, n1, n2, jnp.asarray(deleted), delta
    )
    div = (mu1 - mu2) ** 2 / (2 * sigma**2)
    w = (n1 - deleted) / (n1 - deleted + n2)
    log_term = np.log(4 / delta)
    kept = n1 - deleted
    kept_term = np.where(kept > 0, log_term / np.maximum(kept, 1), 0.0)
    eps = 3 * w**2 * div + 3 * w**2 * kept_term + 3 * (1 - w) ** 2 * log_term / n2
    root = (
        (1 - w) * np.sqrt(div)
        - w * np.sqrt(kept_term)
        - (1 - w) * np.sqrt(log_term / n2)
    )
    np.testing.assert_allclose(e, eps, rtol=1e-5)
    np.testing.assert_allclose(a, np.maximum(root, 0) ** 2, rtol=1e-4, atol=1e-7)
    # More deletion: the guarantees improve on both sides.
    assert np.all(np.diff(np.asarray(a)) >= 0) and np.all(np.diff(np.asarray(e)) <= 0)


def test_selective_bound_matches_formula():
    mu1, mu2, sigma, n1, n2, delta = 0.0, 1.2, 0.8, 2000, 1000, 0.1
    deleted = np.array([400, 1000, 1900, 2000])
    a, e = select.selective_removal_bound(
        mu1, mu2, sigma, n1, n2, jnp.asarray(deleted), delta
    )
    dist = abs(mu1 - mu2)
    w = (n1 - deleted) / (n1 - deleted + n2)
    log_term = np.log(4 / delta)
    u = (n1 - deleted) / n1 + np.sqrt(log_term / (2 * n1))
    assert np.all(u < 1)
    quant = stats.foldnorm.ppf(u, dist / sigma, scale=sigma)
    shift = w * quant + (1 + w) * sigma * np.sqrt(2 * log_term / n2)
    np.testing.assert_allclose(e, shift**2 / (2 * sigma**2), rtol=2e-4)
    np.testing.assert_allclose(
        a, np.maximum(dist - shift, 0) ** 2 / (2 * sigma**2), rtol=2e-3, atol=1e-6
    )


def test_selective_bound_vacuous_for_small_deletions():
    n1, n2, delta = 1000, 1000, 0.05
    eta = np.sqrt(np.log(4 / delta) / (2 * n1))
    deleted = np.array([0, 10, 40, 46, 47, 60, 500, 1000])
    a, e = select.selective_removal_bound(
        0.0, 1.0, 1.0, n1, n2, jnp.asarray(deleted), delta
    )
    a, e = np.asarray(a), np.asarray(e)
    vacuous = (n1 - deleted) / n1 + eta >= 1
    assert vacuous.tolist() == [True] * 4 + [False] * 4
    assert np.all(e[vacuous] == np.inf) and np.all(a[vacuous] == 0.0)
    assert np.all(np.isfinite(e[~vacuous])) and np.all(a[-2:] > 0)
    # Deleting everything: the guarantee no longer depends on the quantile.
    e_max = np.sqrt(2 * np.log(4 / delta) / n2)
    np.testing.assert_allclose(e[-1], e_max**2 / 2, rtol=1e-4)
    # Both regimes were exercised.
    assert (n1 - 40) / n1 + eta >= 1 > (n1 - 60) / n1 + eta


@pytest.mark.parametrize("mu2", [0.1, 0.3])
def test_selective_bound_beats_random_low_divergence(mu2):
    args = (0.0, mu2, 1.0, 10_000, 10_000, 9_000)
    _, e_sel = select.selective_removal_bound(*args)
    _, e_rand = select.random_removal_bound(*args)
    assert float(e_sel) < float(e_rand)


def test_simulated_selective_beats_random():
    a_rand, e_rand = _simulate(0.3, 100, False, seed=1)
    a_sel, e_sel = _simulate(0.3, 100, True, seed=1)
    assert e_sel.mean() < 0.5 * e_rand.mean()
    assert a_sel.mean() > a_rand.mean()


def test_simulate_removal_vmaps_over_budgets():
    budgets = jnp.array([0, 100, 200])
    key = jax.random.split(jax.random.key(3), 400)[0]
    a, e = jax.jit(
        jax.vmap(
            lambda f: select.simulate_removal(
                key, 0.0, 1.0, 1.0, 200, 200, f, selective=True
            )
        )
    )(budgets)
    for i, f in enumerate([0, 100, 200]):
        ai, ei = _simulate(1.0, f, True, seed=3)
        np.testing.assert_allclose([a[i], e[i]], [ai[0], ei[0]], rtol=1e-5, atol=1e-8)
    # Deleting all of p1 leaves a fit on p2 alone: eps tiny, alpha ~ 0.5.
    assert float(e[2]) < 0.05 and float(a[2]) > 0.3
    assert float(e[0]) > float(e[1]) > float(e[2])
    assert float(a[0]) < float(a[1]) < float(a[2])


_fq = jax.jit(select.folded_normal_quantile)


def test_folded_normal_quantile_inverts_cdf():
    u = jnp.linspace(0.01, 0.99, 25)
    for loc, scale in [(0.0, 1.0), (1.5, 0.7), (-2.0, 2.0)]:
        qs = _fq(u, loc, scale)
        np.testing.assert_allclose(
            select.folded_normal_cdf(qs, loc, scale), u, atol=2e-5
        )
        ref = stats.foldnorm.ppf(np.asarray(u), abs(loc) / scale, scale=scale)
        np.testing.assert_allclose(qs, ref, rtol=1e-4, atol=1e-5)
    t = np.linspace(0, 5, 11)
    np.testing.assert_allclose(
        select.folded_normal_cdf(t, 1.0, 1.3),
        stats.foldnorm.cdf(t, 1.0 / 1.3, scale=1.3),
        atol=1e-6,
    )


def test_folded_normal_quantile_at_zero_loc_and_edges():
    u = np.array([0.05, 0.2, 0.5, 0.8, 0.95])
    np.testing.assert_allclose(
        _fq(jnp.asarray(u), 0.0, 1.0),
        stats.norm.ppf((1 + u) / 2),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        _fq(jnp.asarray(u), 0.0, 2.5),
        2.5 * stats.norm.ppf((1 + u) / 2),
        rtol=1e-4,
    )
    assert float(_fq(1.0, 0.5, 1.0)) == np.inf
    assert float(_fq(1.2, 0.5, 1.0)) == np.inf
    assert float(_fq(0.0, 0.5, 1.0)) == 0.0
    assert float(select.folded_normal_cdf(-1.0, 0.5, 1.0)) == 0.0


def test_kept_weight():
    assert float(select.kept_weight(100, 300, 20)) == pytest.approx(80 / 380)
    assert float(select.kept_weight(100, 300, 100)) == 0.0


@pytest.mark.parametrize(
    "bound", [select.random_removal_bound, select.selective_removal_bound]
)
def test_bounds_invalid_input(bound):
    with pytest.raises(ValueError, match="exceed"):
        bound(0.0, 1.0, 1.0, 100, 100, 101)
    with pytest.raises(ValueError, match="n2"):
        bound(0.0, 1.0, 1.0, 100, 0, 10)
    with pytest.raises(ValueError, match="deleted"):
        bound(0.0, 1.0, 1.0, 100, 100, -1)
    for d in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="delta"):
            bound(0.0, 1.0, 1.0, 100, 100, 10, d)


# --------------------------------------------------------------------------
# Deletion scores
# --------------------------------------------------------------------------

# Retain set: exactly symmetric about the origin (mean 0, isotropic covariance).
_RETAIN_2D = np.array(
    [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.7, 0.7], [-0.7, -0.7],
     [0.7, -0.7], [-0.7, 0.7]]
)  # fmt: skip
# Forget set: row 2 is farthest from the retain mean (|x|^2 = 25 > 21.25) and
# nearest to the forget mean (4, 0): distance 1 against ~3.04 for the others.
_FORGET_2D = np.array([[3.5, 3.0], [3.5, -3.0], [5.0, 0.0]])


@pytest.mark.parametrize("name", ["maha_mu2", "lr_maha", "lr_maha_sq"])
def test_maha_scores_rank_constructed_point_first(name):
    forget, retain = _FORGET_2D, _RETAIN_2D
    mu1 = forget.mean(0)
    assert np.argmin(np.linalg.norm(forget - mu1, axis=1)) == 2
    assert np.argmax(np.linalg.norm(forget - retain.mean(0), axis=1)) == 2
    for cov in ("ridge", "ledoit_wolf"):
        s = np.asarray(select.score(name, forget, retain, covariance=cov))
        assert s.shape == (3,)
        assert np.argmax(s) == 2
        assert s[2] > s[:2].max() + 1.0
        mask = np.asarray(select.select_for_removal(s, 1))
        np.testing.assert_array_equal(mask, [False, False, True])


def test_cos_scores_rank_constructed_direction_first():
    # Retain directions centred exactly on +z.
    retain = np.array(
        [[0.2, 0.0, 1.0], [-0.2, 0.0, 1.0], [0.0, 0.2, 1.0], [0.0, -0.2, 1.0]]
    )
    # Row 1 is at 90 degrees from +z (the farthest), and nearest in angle to the
    # forget mean; magnitudes differ to check that only directions matter.
    forget = np.array([[1.0, 0.8, 0.3], [3.0, 0.0, 0.0], [0.5, -0.4, 0.15]])
    unit = forget / np.linalg.norm(forget, axis=1, keepdims=True)
    mu1, mu2 = forget.mean(0), retain.mean(0)
    cos1 = unit @ mu1 / np.linalg.norm(mu1)
    cos2 = unit @ mu2 / np.linalg.norm(mu2)
    assert np.argmax(cos1) == 1 and np.argmin(cos2) == 1
    s_cos = np.asarray(select.score("cos_mu2", forget, retain))
    np.testing.assert_allclose(s_cos, 1 - cos2, rtol=1e-5, atol=1e-6)
    s_lr = np.asarray(select.score("lr_cos", forget, retain))
    np.testing.assert_allclose(s_lr, cos1 - cos2, rtol=1e-5, atol=1e-6)
    assert np.argmax(s_cos) == 1 and np.argmax(s_lr) == 1
    # Rows 0 and 2 share a direction: equal scores despite different norms.
    np.testing.assert_allclose(s_cos[0], s_cos[2], rtol=1e-6)
    np.testing.assert_allclose(
        select.cos_mu2(jnp.asarray(forget) * 7.0, jnp.asarray(mu2)), s_cos, rtol=1e-5
    )


def test_knn_ratio_ranks_dense_forget_cluster_centre_first():
    # Retain: a 6x6 grid around the origin. Forget: a tight cluster centred on
    # (6, 0) (its centre is row 3) plus three points inside the retain region.
    g = np.linspace(-1.0, 1.0, 6)
    retain = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    cluster = np.array([[6.1, 0.1], [6.1, -0.1], [5.9, 0.1], [6.0, 0.0], [5.9, -0.1]])
    inside = np.array([[0.1, 0.1], [-0.3, 0.2], [0.2, -0.5]])
    forget = np.concatenate([inside[:1], cluster, inside[1:]])
    centre = 4
    s = np.asarray(select.score("knn_ratio", forget, retain, k=4))
    assert np.argmax(s) == centre
    assert s[centre] > np.delete(s, centre).max() + 0.3
    # Points inside the retain region score lowest.
    assert set(np.argsort(s)[:3]) == {0, 6, 7}
    mask = np.asarray(select.select_for_removal(s, 1))
    assert np.flatnonzero(mask).tolist() == [centre]


def test_norm_ranks_longest_first():
    x = np.array([[1.0, 1.0], [-3.0, 4.0], [0.0, 2.0], [4.9, 0.0]])
    s = np.asarray(select.score("norm", x, x))
    np.testing.assert_allclose(s, np.linalg.norm(x, axis=1), rtol=1e-6)
    assert np.argmax(s) == 1
    np.testing.assert_array_equal(
        np.asarray(select.select_for_removal(s, 2)), [False, True, False, True]
    )


def test_random_scores_uniform_and_key_dependent():
    n = 2000
    x = np.zeros((n, 2))
    s0 = np.asarray(select.score("random", x, x, key=jax.random.key(0)))
    s1 = np.asarray(select.score("random", x, x, key=jax.random.key(1)))
    assert s0.shape == (n,)
    assert np.all((s0 >= 0) & (s0 < 1))
    assert stats.kstest(s0, "uniform").pvalue > 1e-3
    assert not np.allclose(s0, s1)
    assert abs(np.corrcoef(s0, s1)[0, 1]) < 0.1
    np.testing.assert_array_equal(
        s0, np.asarray(select.score("random", x, x, key=jax.random.key(0)))
    )
    keys = jax.random.split(jax.random.key(7), 5)
    batched = jax.vmap(lambda k: select.random(k, 50))(keys)
    assert batched.shape == (5, 50)
    for i in (0, 4):
        np.testing.assert_array_equal(batched[i], select.random(keys[i], 50))
    # Deleting the top f is uniform: every index is picked about equally often.
    masks = jax.jit(
        jax.vmap(lambda k: select.select_for_removal(select.random(k, 10), 3))
    )(jax.random.split(jax.random.key(8), 4000))
    freq = np.asarray(masks).mean(0)
    np.testing.assert_allclose(freq, 0.3, atol=0.04)
    assert np.all(np.asarray(masks).sum(1) == 3)


def test_lr_maha_default_is_the_difference_of_mahalanobis_distances():
    """The paper's score (default): d_M(x; mu2) - d_M(x; mu1), distances not
    squares; it ranks differently from the squared form."""
    rng = np.random.default_rng(6)
    cov = _spd(rng, 4) / 4
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    x = rng.normal(size=(200, 4)) * 1.5
    precision = np.linalg.inv(cov)
    got = np.asarray(select.lr_maha(jnp.asarray(x), mu1, mu2, jnp.asarray(precision)))
    d = lambda m: np.sqrt(np.einsum("nd,de,ne->n", x - m, precision, x - m))  # noqa: E731
    np.testing.assert_allclose(got, d(mu2) - d(mu1), rtol=1e-4, atol=1e-4)
    sq = np.asarray(
        select.lr_maha(jnp.asarray(x), mu1, mu2, jnp.asarray(precision), squared=True)
    )
    assert not np.array_equal(np.argsort(got), np.argsort(sq))
    by_name = np.asarray(select.score("lr_maha_sq", x, x[:100] + 1.0, ridge=1e-3))
    by_default = np.asarray(select.score("lr_maha", x, x[:100] + 1.0, ridge=1e-3))
    assert not np.allclose(by_name, by_default)


def test_lr_maha_squared_is_twice_gaussian_log_likelihood_ratio():
    rng = np.random.default_rng(6)
    cov = _spd(rng, 4) / 4
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    x = rng.normal(size=(20, 4)) * 1.5
    precision = np.linalg.inv(cov)
    got = np.asarray(
        select.lr_maha(jnp.asarray(x), mu1, mu2, jnp.asarray(precision), squared=True)
    )
    ref = 2 * (
        stats.multivariate_normal(mu1, cov).logpdf(x)
        - stats.multivariate_normal(mu2, cov).logpdf(x)
    )
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
    d2 = np.einsum("nd,de,ne->n", x - mu2, precision, x - mu2)
    np.testing.assert_allclose(
        select.maha_mu2(jnp.asarray(x), mu2, jnp.asarray(precision)), d2, rtol=1e-4
    )


@pytest.mark.parametrize("n,d", [(60, 5), (12, 20)])
def test_ledoit_wolf_matches_sklearn(n, d):
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    cov, shrink = select.ledoit_wolf(x)
    ref = LedoitWolf().fit(x)
    np.testing.assert_allclose(float(shrink), ref.shrinkage_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        cov, ref.covariance_, rtol=1e-4, atol=1e-5 * np.abs(ref.covariance_).max()
    )
    assert 0 < float(shrink) <= 1


def _brute_knn(x, ref, k):
    d2 = ((x[:, None, :] - ref[None]) ** 2).sum(-1)
    return np.sort(d2, axis=1)[:, :k]


@pytest.mark.parametrize("chunk_size", [1, 8, 37, 256])
def test_knn_sq_distances_brute_force(chunk_size):
    rng = np.random.default_rng(7)
    x, ref = rng.normal(size=(37, 3)), rng.normal(size=(23, 3))
    got = select.knn_sq_distances(
        jnp.asarray(x), jnp.asarray(ref), 5, chunk_size=chunk_size
    )
    assert got.shape == (37, 5)
    np.testing.assert_allclose(got, _brute_knn(x, ref, 5), rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(np.asarray(got), axis=1) >= 0)
    # Against itself, the nearest is the point itself (distance 0).
    self_d = select.knn_sq_distances(
        jnp.asarray(x), jnp.asarray(x), 2, chunk_size=chunk_size
    )
    np.testing.assert_allclose(self_d[:, 0], 0.0, atol=1e-5)


def test_knn_sq_distances_k_too_large():
    with pytest.raises(ValueError, match="exceeds"):
        select.knn_sq_distances(jnp.zeros((3, 2)), jnp.zeros((4, 2)), 5)


def _knn_log_density_ref(x, ref, k):
    d2 = ((x - ref) ** 2).sum(-1)
    nbrs = ref[np.argsort(d2)[:k]]
    h2 = np.sort(d2)[k - 1]
    dim = x.shape[0]
    logs = stats.multivariate_normal(x, h2 * np.eye(dim)).logpdf(nbrs)
    return logsumexp(logs) - np.log(k)


_knn_jit = jax.jit(
    select.knn_ratio, static_argnames=("k", "exclude_self", "chunk_size")
)


def test_knn_ratio_matches_reference_and_exclude_self():
    rng = np.random.default_rng(8)
    p1 = rng.normal(size=(30, 3)) + 1.0
    p2 = rng.normal(size=(40, 3))
    k = 4
    f1, f2 = jnp.asarray(p1, jnp.float32), jnp.asarray(p2, jnp.float32)
    got = np.asarray(_knn_jit(f1, f1, f2, k=k, chunk_size=7))
    for i in range(0, 30, 6):
        others = np.delete(p1, i, axis=0)
        ref = _knn_log_density_ref(p1[i], others, k) - _knn_log_density_ref(
            p1[i], p2, k
        )
        np.testing.assert_allclose(got[i], ref, rtol=1e-3, atol=1e-3)
        # exclude_self == scoring against P1 with the point itself removed.
        single = _knn_jit(
            f1[i : i + 1], jnp.asarray(others, jnp.float32), f2, k=k,
            exclude_self=False,
        )  # fmt: skip
        np.testing.assert_allclose(float(single[0]), got[i], rtol=1e-4, atol=1e-4)
    # Without exclusion the point is its own neighbour: a different score.
    incl = np.asarray(_knn_jit(f1, f1, f2, k=k, exclude_self=False, chunk_size=7))
    assert not np.allclose(incl, got)
    ref0 = _knn_log_density_ref(p1[0], p1, k) - _knn_log_density_ref(p1[0], p2, k)
    np.testing.assert_allclose(incl[0], ref0, rtol=1e-3, atol=1e-3)
    # The host-side score() (un-jitted, default chunk) gives the same scores.
    np.testing.assert_allclose(
        select.score("knn_ratio", p1, p2, k=k), got, rtol=1e-4, atol=1e-4
    )


def test_fit_gaussian_singular_and_regularised():
    rng = np.random.default_rng(9)
    few = rng.normal(size=(3, 8))  # N < D
    x = rng.normal(size=(50, 4))
    dup = np.concatenate([x, x[:, :1]], axis=1)  # duplicated column
    for bad in (few, dup):
        with pytest.raises(ValueError, match="singular"):
            select.fit_gaussian(bad, ridge=0.0)
        for kwargs in ({"ridge": 1e-3}, {"covariance": "ledoit_wolf"}):
            mean, prec = select.fit_gaussian(bad, **kwargs)
            assert np.all(np.isfinite(np.asarray(prec)))
            np.testing.assert_allclose(mean, bad.mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(prec, np.asarray(prec).T, atol=1e-6)
    mean, prec = select.fit_gaussian(x, ridge=0.0)
    emp = np.cov(x, rowvar=False, bias=True)
    np.testing.assert_allclose(np.asarray(prec) @ emp, np.eye(4), atol=1e-4)
    mean, prec = select.fit_gaussian(x, ridge=0.5)
    np.testing.assert_allclose(
        np.asarray(prec) @ (emp + 0.5 * np.eye(4)), np.eye(4), atol=1e-4
    )
    with pytest.raises(ValueError, match="covariance"):
        select.fit_gaussian(x, covariance="oas")
    with pytest.raises(ValueError, match="ridge"):
        select.fit_gaussian(x, ridge=-1.0)
    with pytest.raises(ValueError, match="empty"):
        select.fit_gaussian(np.zeros((0, 3)))


def test_score_errors():
    x, y = np.ones((4, 3)), np.ones((5, 3))
    with pytest.raises(ValueError, match="unknown score"):
        select.score("maha", x, y)
    with pytest.raises(ValueError, match="empty"):
        select.score("norm", np.zeros((0, 3)), y)
    with pytest.raises(ValueError, match="empty"):
        select.score("norm", x, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="features"):
        select.score("norm", x, np.ones((5, 2)))
    with pytest.raises(ValueError, match="key"):
        select.score("random", x, y)
    with pytest.raises(ValueError, match="2-D"):
        select.score("norm", np.ones(3), y)
    assert set(select.SCORES) == {
        "cos_mu2", "lr_cos", "maha_mu2", "lr_maha", "lr_maha_sq", "knn_ratio",
        "norm", "random"
    }  # fmt: skip


@pytest.mark.parametrize("name", [n for n in select.SCORES if n != "random"])
def test_score_by_name_shapes_and_finiteness(name):
    rng = np.random.default_rng(10)
    forget = rng.normal(size=(25, 4)) + 1.0
    retain = rng.normal(size=(40, 4))
    s = np.asarray(select.score(name, forget, retain, k=5))
    assert s.shape == (25,) and np.all(np.isfinite(s))


def test_scores_jit_and_vmap():
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    mu1, mu2 = x.mean(0), jnp.zeros(3)
    prec = jnp.eye(3) * 2.0
    np.testing.assert_allclose(
        jax.jit(select.maha_mu2)(x, mu2, prec), select.maha_mu2(x, mu2, prec), rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.jit(select.lr_maha)(x, mu1, mu2, prec),
        select.lr_maha(x, mu1, mu2, prec),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        jax.jit(select.lr_cos)(x, mu1, mu2 + 1.0),
        select.lr_cos(x, mu1, mu2 + 1.0),
        rtol=1e-5,
        atol=1e-6,
    )
    # vmap maha over a batch of candidate means.
    mus = jnp.stack([mu2, mu2 + 1.0])
    batched = jax.vmap(lambda m: select.maha_mu2(x, m, prec))(mus)
    np.testing.assert_allclose(
        batched[1], select.maha_mu2(x, mu2 + 1.0, prec), rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.jit(select.norm)(x), np.linalg.norm(np.asarray(x), axis=1), rtol=1e-6
    )


# --------------------------------------------------------------------------
# select_for_removal / edit_dataset
# --------------------------------------------------------------------------


def test_select_for_removal_top_budget():
    rng = np.random.default_rng(12)
    s = rng.normal(size=30)
    for budget in range(31):
        mask = np.asarray(select.select_for_removal(jnp.asarray(s), budget))
        assert mask.dtype == bool and mask.sum() == budget
        expected = np.zeros(30, bool)
        expected[np.argsort(-s)[:budget]] = True
        np.testing.assert_array_equal(mask, expected)
        if 0 < budget < 30:
            assert s[mask].min() > s[~mask].max()
    np.testing.assert_array_equal(
        select.select_for_removal(jnp.asarray(s), 0), np.zeros(30, bool)
    )
    np.testing.assert_array_equal(
        select.select_for_removal(jnp.asarray(s), 30), np.ones(30, bool)
    )


def test_select_for_removal_ties_go_to_lower_index():
    s = jnp.array([1.0, 2.0, 1.0, 2.0, 1.0, 0.0])
    assert np.flatnonzero(select.select_for_removal(s, 1)).tolist() == [1]
    assert np.flatnonzero(select.select_for_removal(s, 2)).tolist() == [1, 3]
    assert np.flatnonzero(select.select_for_removal(s, 3)).tolist() == [0, 1, 3]
    assert np.flatnonzero(select.select_for_removal(s, 4)).tolist() == [0, 1, 2, 3]
    assert np.flatnonzero(select.select_for_removal(jnp.zeros(5), 2)).tolist() == [0, 1]
    ints = jnp.array([3, 3, 5, 3])
    assert np.flatnonzero(select.select_for_removal(ints, 2)).tolist() == [0, 2]


def test_select_for_removal_vmap_and_jit():
    rng = np.random.default_rng(13)
    s = jnp.asarray(rng.normal(size=12))
    budgets = jnp.arange(13)
    batched = np.asarray(jax.vmap(select.select_for_removal, (None, 0))(s, budgets))
    loop = np.stack([np.asarray(select.select_for_removal(s, int(b))) for b in budgets])
    np.testing.assert_array_equal(batched, loop)
    # Nested: a larger budget deletes a superset.
    assert np.all(batched[1:] >= batched[:-1])
    np.testing.assert_array_equal(
        jax.jit(select.select_for_removal)(s, 5), select.select_for_removal(s, 5)
    )
    keys = jax.random.split(jax.random.key(0), 6)
    per_seed = np.asarray(
        jax.vmap(lambda k: select.select_for_removal(select.random(k, 12), 4))(keys)
    )
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(
            per_seed[i], select.select_for_removal(select.random(k, 12), 4)
        )
    assert len({tuple(r) for r in per_seed}) > 1


def test_select_for_removal_errors():
    s = jnp.arange(5.0)
    for bad in (-1, 6):
        with pytest.raises(ValueError, match="budget"):
            select.select_for_removal(s, bad)
    with pytest.raises(ValueError, match="empty"):
        select.select_for_removal(jnp.zeros(0), 0)
    with pytest.raises(ValueError, match="1-D"):
        select.select_for_removal(jnp.zeros((2, 2)), 1)


def test_budget_from_fraction():
    assert select.budget_from_fraction(0.5, 11) in (5, 6)
    assert select.budget_from_fraction(0.0, 10) == 0
    assert select.budget_from_fraction(1.0, 10) == 10
    assert select.budget_from_fraction(0.26, 100) == 26
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            select.budget_from_fraction(bad, 10)


def _sha(idx):
    return hashlib.sha256(np.asarray(idx, np.int64).tobytes()).hexdigest()


def test_edit_dataset_keeps_and_manifest():
    num = 20
    forget = np.array([17, 3, 8, 12, 5, 0])
    scores = np.array([0.9, 0.1, 0.5, 0.95, 0.3, 0.7])
    kept, m = select.edit_dataset(num, forget, scores, 3, score_name="lr_maha")
    removed = {12, 17, 0}  # the three highest scores
    assert kept.tolist() == sorted(set(range(num)) - removed)
    assert np.all(np.diff(kept) > 0)
    assert m["score"] == "lr_maha" and m["budget"] == 3 and m["forget_size"] == 6
    assert m["fraction"] == pytest.approx(0.5)
    assert m["removed_count"] == 3 and m["kept_count"] == num - 3
    assert m["removed_count"] + m["kept_count"] == num
    assert m["kept_sha256"] == _sha(kept)
    assert m["removed_sha256"] == _sha(sorted(removed))
    kept2, m2 = select.edit_dataset(num, forget, scores, 3, score_name="lr_maha")
    np.testing.assert_array_equal(kept, kept2)
    assert m == m2
    # A permuted but equivalent forget set gives the same edit and digests.
    perm = np.array([3, 0, 5, 1, 4, 2])
    kept3, m3 = select.edit_dataset(
        num, forget[perm], scores[perm], 3, score_name="lr_maha"
    )
    np.testing.assert_array_equal(kept3, kept)
    assert m3["kept_sha256"] == m["kept_sha256"]
    _, m4 = select.edit_dataset(num, forget, scores, 4)
    assert m4["removed_sha256"] != m["removed_sha256"] and m4["score"] is None
    # Budget 0 keeps everything, budget N1 removes exactly the forget set.
    k0, m0 = select.edit_dataset(num, forget, scores, 0)
    assert k0.tolist() == list(range(num)) and m0["removed_count"] == 0
    kn, mn = select.edit_dataset(num, forget, scores, 6)
    assert kn.tolist() == sorted(set(range(num)) - set(forget.tolist()))
    assert mn["removed_sha256"] == _sha(np.sort(forget))


def test_edit_dataset_errors():
    with pytest.raises(ValueError, match="duplicates"):
        select.edit_dataset(10, [1, 2, 2], [0.1, 0.2, 0.3], 1)
    with pytest.raises(ValueError, match="lie in"):
        select.edit_dataset(10, [1, 10], [0.1, 0.2], 1)
    with pytest.raises(ValueError, match="lie in"):
        select.edit_dataset(10, [-1, 3], [0.1, 0.2], 1)
    with pytest.raises(ValueError, match="same shape"):
        select.edit_dataset(10, [1, 2, 3], [0.1, 0.2], 1)
    with pytest.raises(ValueError, match="budget"):
        select.edit_dataset(10, [1, 2, 3], [0.1, 0.2, 0.3], 4)
    with pytest.raises(ValueError, match="budget"):
        select.edit_dataset(10, [1, 2, 3], [0.1, 0.2, 0.3], -1)
    with pytest.raises(ValueError, match="non-empty"):
        select.edit_dataset(10, [], [], 0)
    with pytest.raises(TypeError, match="integers"):
        select.edit_dataset(10, [1.0, 2.0], [0.1, 0.2], 1)


# Regressions for bugs found while writing these tests.


@pytest.mark.parametrize("seed", range(10))
def test_fit_gaussian_square_rank_deficient_always_raises(seed):
    # 5 rows in 5 dimensions: the centred covariance has rank 4.
    x = np.random.default_rng(seed).normal(size=(5, 5))
    with pytest.raises(ValueError, match="singular"):
        select.fit_gaussian(x, ridge=0.0)


def test_exp_family_frontier_unreachable_alpha_is_inf():
    fam = select.bernoulli()
    eps, _, _ = select.exp_family_frontier(
        fam, fam.natural(jnp.array([0.3])), fam.natural(jnp.array([0.5])), 15.0
    )
    assert np.isinf(float(eps))
    bounded = select.ExpFamily(
        "capped gaussian",
        lambda t: 0.5 * jnp.sum(t * t),
        lambda mu: mu,
        lambda mu: jnp.all(mu < 3.0),
    )
    eps, _, _ = select.exp_family_frontier(
        bounded, jnp.array([0.0]), jnp.array([1.0]), 10.0
    )
    assert np.isinf(float(eps))


def test_optimal_edit_identical_means_below_threshold_is_mu2():
    assert float(select.optimal_edit(0.0, 0.0, 1.0, 0.0)) == 0.0


def test_edit_dataset_rejects_float_budget_and_rounds_half_up():
    with pytest.raises(TypeError, match="budget"):
        select.edit_dataset(5, [1, 3], [0.2, 0.8], 1.5)
    assert select.budget_from_fraction(0.5, 25) == 13
