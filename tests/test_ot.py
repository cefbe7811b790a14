"""sinkhorn_cost: entropic OT between point clouds through ott-jax."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.losses import sinkhorn_cost

# Jitted once per static configuration: eager calls retrace ott's loops on
# every call, which is much slower than the solve itself.
_ot = jax.jit(
    sinkhorn_cost,
    static_argnames=("epsilon", "cost", "iterations", "kind", "clamp", "threshold"),
)

# One configuration for every gradient test, so they share one compilation.
_GRAD_KW = dict(epsilon=0.05, iterations=100)


@jax.jit
def _value_and_grad(x, y, where_x=None, where_y=None):
    f = lambda x, y: sinkhorn_cost(x, y, where_x=where_x, where_y=where_y, **_GRAD_KW)
    return jax.value_and_grad(lambda x, y: f(x, y)[0], argnums=(0, 1))(x, y)


def _clouds(seed, n=4, m=4, d=3):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(m, d)), jnp.float32)
    return x, y


def _cost_matrix(x, y, cost):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if cost == "sqeuclidean":
        return ((x[:, None] - y[None]) ** 2).sum(-1)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    return 1.0 - xn @ yn.T


def _exact_ot(x, y, cost):
    # n == m with uniform weights: an optimal plan is a permutation / n
    # (Birkhoff), so brute force over all permutations is exact.
    c = _cost_matrix(x, y, cost)
    n = c.shape[0]
    return min(
        c[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n))
    )


@pytest.mark.parametrize(
    "cost, epsilon", [("sqeuclidean", 2e-3), ("cosine", 1e-3)], ids=str
)
def test_small_epsilon_reaches_exact_ot(cost, epsilon):
    x, y = _clouds(0)
    value, info = _ot(x, y, cost=cost, epsilon=epsilon, iterations=2000)
    exact = _exact_ot(x, y, cost)
    assert float(info["converged"]) == 1.0
    np.testing.assert_allclose(float(value), exact, rtol=1e-2)
    # A larger epsilon blurs the plan: strictly above the exact optimum.
    blurred, _ = _ot(x, y, cost=cost, epsilon=0.5, iterations=200)
    assert float(blurred) > exact * 1.02


def test_divergence_zero_on_identical_positive_otherwise():
    x, y = _clouds(1, n=5, m=5)
    same, _ = _ot(x, x, kind="divergence", epsilon=0.05, iterations=100)
    diff, _ = _ot(x, y, kind="divergence", epsilon=0.05, iterations=100)
    assert abs(float(same)) < 1e-5
    assert float(diff) > 1e-2
    # The regularized cost of identical clouds is not 0 (hence the debiasing).
    reg, _ = _ot(x, x, kind="regularized", epsilon=0.05, iterations=100)
    assert float(reg) > 1e-2


@pytest.mark.parametrize("cost, epsilon", [("cosine", 0.2), ("sqeuclidean", 1.0)])
def test_transport_symmetric(cost, epsilon):
    x, y = _clouds(2, n=5, m=5)
    kw = dict(cost=cost, epsilon=epsilon, iterations=300, threshold=1e-5)
    xy, info = _ot(x, y, **kw)
    yx, _ = _ot(y, x, **kw)
    assert float(info["converged"]) == 1.0
    np.testing.assert_allclose(float(xy), float(yx), rtol=1e-4)


def test_jit_vmap_grad():
    x, y = _clouds(3, n=5, m=4)

    def f(x, y):
        return sinkhorn_cost(x, y, **_GRAD_KW)[0]

    eager = f(x, y)
    np.testing.assert_allclose(float(jax.jit(f)(x, y)), float(eager), rtol=1e-5)
    value, (gx, gy) = _value_and_grad(x, y)
    np.testing.assert_allclose(float(value), float(eager), rtol=1e-5)
    assert gx.shape == x.shape and gy.shape == y.shape
    assert bool(jnp.all(jnp.isfinite(gx)) & jnp.all(jnp.isfinite(gy)))
    assert float(jnp.abs(gx).max()) > 0 and float(jnp.abs(gy).max()) > 0
    xs = jnp.stack([x, x + 0.3, -x])
    ys = jnp.stack([y, y, y * 2.0])
    batched = jax.jit(jax.vmap(f))(xs, ys)
    looped = [float(jax.jit(f)(a, b)) for a, b in zip(xs, ys, strict=True)]
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-4)


def _padded(x, y):
    garbage = jnp.array([[jnp.inf, 0.0, 0.0], [1e30, jnp.nan, -1e30], [0.0, 0.0, 0.0]])
    xp = jnp.concatenate([x[:2], garbage, x[2:]])
    wx = jnp.array([True, True, False, False, False, True, True, True])
    yp = jnp.concatenate([y, garbage[:2]])
    wy = jnp.array([True] * 4 + [False] * 2)
    return xp, yp, wx, wy


def test_masked_points_have_no_effect():
    x, y = _clouds(4, n=5, m=4)
    xp, yp, wx, wy = _padded(x, y)
    value, (gx, gy) = _value_and_grad(x, y)
    padded, (gxp, gyp) = _value_and_grad(xp, yp, where_x=wx, where_y=wy)
    np.testing.assert_allclose(float(padded), float(value), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gxp[np.asarray(wx)], gx, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gyp[np.asarray(wy)], gy, rtol=1e-3, atol=1e-5)
    assert np.all(np.asarray(gxp[~np.asarray(wx)]) == 0.0)
    assert np.all(np.asarray(gyp[~np.asarray(wy)]) == 0.0)
    # Only where_y: x unpadded.
    only_y, _ = _ot(x, yp, where_y=wy, **_GRAD_KW)
    np.testing.assert_allclose(float(only_y), float(value), rtol=1e-5, atol=1e-6)


def test_masked_points_divergence():
    x, y = _clouds(4, n=5, m=4)
    xp, yp, wx, wy = _padded(x, y)
    kw = dict(_GRAD_KW, kind="divergence")
    value, _ = _ot(x, y, **kw)
    padded, _ = _ot(xp, yp, where_x=wx, where_y=wy, **kw)
    np.testing.assert_allclose(float(padded), float(value), rtol=1e-5, atol=1e-6)
    gxp, gyp = jax.jit(
        jax.grad(
            lambda a, b: sinkhorn_cost(a, b, where_x=wx, where_y=wy, **kw)[0], (0, 1)
        )
    )(xp, yp)
    assert bool(jnp.all(jnp.isfinite(gxp)) & jnp.all(jnp.isfinite(gyp)))
    assert np.all(np.asarray(gxp[~np.asarray(wx)]) == 0.0)
    assert np.all(np.asarray(gyp[~np.asarray(wy)]) == 0.0)
    assert float(jnp.abs(gxp).max()) > 0


def test_clamp_keeps_costs_nonnegative():
    # Near-parallel directions whose 1 - cos rounds below 0 in float32.
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(6, 7)) * 3.0, jnp.float32)
    xn = x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)
    raw = 1.0 - xn @ xn.T
    assert float(raw.min()) < 0  # the case the clamp is for
    value, _ = _ot(x, x, epsilon=1e-3, iterations=50)
    unclamped, _ = _ot(x, x, epsilon=1e-3, iterations=50, clamp=False)
    assert float(value) >= 0.0
    assert float(unclamped) <= float(value)
    assert float(unclamped) < 0.0


def test_diagnostics():
    x, y = _clouds(6, n=5, m=4)
    _, easy = _ot(x, y, epsilon=0.5, iterations=200)
    _, hard = _ot(x, y, cost="sqeuclidean", epsilon=1e-3, iterations=1)
    assert set(easy) == {"converged", "iterations", "marginal_error"}
    for info in (easy, hard):
        for v in info.values():
            assert v.shape == () and v.dtype == jnp.float32
    assert float(easy["converged"]) == 1.0 and float(easy["marginal_error"]) < 1e-3
    assert float(easy["iterations"]) == 200.0
    assert float(hard["converged"]) == 0.0 and float(hard["marginal_error"]) > 1e-3
    assert float(hard["iterations"]) == 1.0


def test_gradient_matches_finite_difference():
    # Unrolled gradients are exact derivatives of the (unconverged) value.
    x, y = _clouds(7, n=5, m=4)
    direction = jnp.asarray(np.random.default_rng(8).normal(size=x.shape), jnp.float32)
    _, (g, _) = _value_and_grad(x, y)
    h = 1e-2
    plus, _ = _ot(x + h * direction, y, **_GRAD_KW)
    minus, _ = _ot(x - h * direction, y, **_GRAD_KW)
    fd = (float(plus) - float(minus)) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(g, direction)), fd, rtol=5e-2, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=np.zeros((3,))), ValueError, "x"),
        (dict(y=np.zeros((3, 2, 1))), ValueError, "y"),
        (dict(y=np.zeros((4, 5))), ValueError, r"\(4, 5\)"),
        (dict(epsilon=0.0), ValueError, "epsilon"),
        (dict(epsilon=-1.0), ValueError, "epsilon"),
        (dict(epsilon=float("nan")), ValueError, "epsilon"),
        (dict(epsilon=float("inf")), ValueError, "epsilon"),
        (dict(iterations=0), ValueError, "iterations"),
        (dict(iterations=2.5), TypeError, "iterations"),
        (dict(iterations=True), TypeError, "iterations"),
        (dict(cost="l1"), ValueError, "sqeuclidean"),
        (dict(kind="sharp"), ValueError, "divergence"),
        (dict(where_x=np.ones((4,), bool)), ValueError, "where_x"),
        (dict(where_y=np.ones((2, 2), bool)), ValueError, "where_y"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(x=np.zeros((3, 3)), y=np.zeros((2, 3)))
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(error, match=match):
        sinkhorn_cost(x, y, **args)
