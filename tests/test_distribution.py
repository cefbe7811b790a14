"""Soft ECDF, probit transform, Gaussian MMD and the A-AMU loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxunlearn import losses


def _mmd2_numpy(x, y, s=1.0):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * s * s)).mean()

    return k(x, x) + k(y, y) - 2 * k(x, y)


def test_soft_ecdf_tends_to_mid_rank_ecdf():
    x = np.random.default_rng(0).normal(size=50).astype(np.float32)
    f = losses.soft_ecdf(x, temperature=1e-5)
    below = (x[None, :] < x[:, None]).sum(1)
    np.testing.assert_allclose(f, (below + 0.5) / len(x), atol=1e-6)


def test_soft_ecdf_relu_variant_is_at_least_half_and_masks():
    x = jnp.array([3.0, -1.0, 0.5, jnp.nan, 7.0])
    where = jnp.array([True, True, True, False, True])
    f = losses.soft_ecdf(x, temperature=0.5, relu=True, where=where)
    assert bool(jnp.all(f[where] >= 0.5))
    # the smallest point has every other point above it: exactly 0.5
    assert float(f[1]) == pytest.approx(0.5)
    ref = losses.soft_ecdf(x[where], temperature=0.5, relu=True)
    np.testing.assert_allclose(f[where], ref, rtol=1e-6)


@pytest.mark.parametrize("dist", ["exponential", "lognormal", "uniform"])
def test_probit_of_large_sample_is_standard_normal(dist):
    rng = np.random.default_rng(1)
    x = getattr(rng, dist)(size=3000).astype(np.float32)
    z = np.asarray(losses.probit_transform(x, temperature=1e-4))
    assert abs(z.mean()) < 0.03
    assert abs(z.std() - 1.0) < 0.03
    assert stats.kstest(z, "norm").statistic < 0.02


def test_probit_relu_variant_is_non_negative_half_normal():
    x = np.random.default_rng(2).exponential(size=2000).astype(np.float32)
    z = np.asarray(
        losses.probit_transform(x, temperature=0.5, relu=True, log_input=True)
    )
    assert z.min() >= 0.0
    # F in [0.5, 1): z is the probit of a value >= 1/2, never the paper's N(0, 1)
    assert z.mean() > 0.2


def test_probit_finite_values_and_gradients_at_extreme_losses():
    x = jnp.array([0.0, 1e-8, 1e-3, 1.0, 50.0, 1e4, 1e30], jnp.float32)
    for kw in ({}, {"relu": True, "log_input": True}):
        z = losses.probit_transform(x, temperature=1e-3, **kw)
        g = jax.grad(
            lambda v: losses.probit_transform(v, temperature=1e-3, **kw).sum()
        )(x)
        assert bool(jnp.all(jnp.isfinite(z))) and bool(jnp.all(jnp.isfinite(g)))
        assert float(jnp.max(jnp.abs(z))) < 6.0  # clipped CDF keeps z finite


def test_probit_masked_garbage_changes_nothing():
    x = jnp.array([0.3, 2.0, 0.1, 0.0])
    where = jnp.array([True, True, True, False])

    def f(v):
        return jnp.sum(
            jnp.where(
                where, losses.probit_transform(v, temperature=0.5, where=where), 0
            )
        )

    clean, g_clean = jax.value_and_grad(f)(x)
    dirty, g_dirty = jax.value_and_grad(f)(x.at[3].set(jnp.inf))
    assert float(clean) == float(dirty)
    np.testing.assert_array_equal(g_clean, g_dirty)
    assert float(g_dirty[3]) == 0.0


@pytest.mark.parametrize("d", [None, 3])
def test_mmd2_known_answers(d):
    rng = np.random.default_rng(3)
    shape = (40,) if d is None else (40, d)
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.normal(size=(30,) + shape[1:]).astype(np.float32)
    assert float(losses.gaussian_mmd2(x, x)) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(
        losses.gaussian_mmd2(x, y, bandwidth=0.7), _mmd2_numpy(x, y, 0.7), rtol=1e-4
    )
    np.testing.assert_allclose(
        losses.gaussian_mmd2(x, y), losses.gaussian_mmd2(y, x), rtol=1e-5
    )
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    vals = [float(losses.gaussian_mmd2(x, x + s)) for s in shifts]
    assert all(b > a for a, b in zip(vals, vals[1:], strict=False))


def test_mmd2_masks_jit_vmap():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8,)).astype(np.float32)
    y = rng.normal(size=(6,)).astype(np.float32) + 1.0
    wx = np.array([1, 1, 1, 0, 1, 0, 1, 1], bool)
    wy = np.array([1, 0, 1, 1, 1, 1], bool)
    masked = jax.jit(losses.gaussian_mmd2)(
        np.where(wx, x, np.nan), np.where(wy, y, np.inf), where_x=wx, where_y=wy
    )
    np.testing.assert_allclose(masked, _mmd2_numpy(x[wx], y[wy]), rtol=1e-5)
    shifts = jnp.array([0.0, 1.0, 2.0])
    batched = jax.vmap(lambda s: losses.gaussian_mmd2(x, x + s))(shifts)
    np.testing.assert_allclose(
        batched, [_mmd2_numpy(x, x + s) for s in np.asarray(shifts)], rtol=1e-4
    )


def test_aamu_loss_squares_batch_mean_and_detaches_unseen():
    f = jnp.array([0.1, 0.2, 3.0, 0.05])
    u = jnp.array([2.0, 2.5, 1.5, 3.0, 2.2])

    def total(main, fl, ul):
        return losses.aamu_loss(main, fl, ul, weight=34.0, temperature=0.5)[0]

    loss, parts = losses.aamu_loss(jnp.float32(1.5), f, u)
    assert float(loss) == pytest.approx(1.5**2 + 34.0 * float(parts["mmd2"]), rel=1e-6)
    g_main, g_f, g_u = jax.grad(total, argnums=(0, 1, 2))(jnp.float32(1.5), f, u)
    assert float(g_main) == pytest.approx(3.0)  # d(main^2) = 2 main
    assert bool(jnp.all(g_u == 0.0))  # unseen branch is a constant
    assert float(jnp.abs(g_f).sum()) > 0.0
    unsquared, _ = losses.aamu_loss(jnp.float32(1.5), f, u, square=False)
    assert float(loss - unsquared) == pytest.approx(1.5**2 - 1.5, rel=1e-5)
    # moving the forget losses towards the unseen ones lowers the MMD term
    closer, _ = losses.aamu_loss(jnp.float32(0.0), f + 2.0, u)
    assert float(closer) < float(loss - 1.5**2)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="x"):
        losses.soft_ecdf(jnp.ones((2, 2)), temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_ecdf(jnp.ones(3), temperature=0.0)
    with pytest.raises(ValueError, match="where"):
        losses.probit_transform(jnp.ones(3), temperature=1.0, where=jnp.ones(2, bool))
    with pytest.raises(ValueError, match="dimension"):
        losses.gaussian_mmd2(jnp.ones((3, 2)), jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="bandwidth"):
        losses.gaussian_mmd2(jnp.ones(3), jnp.ones(3), bandwidth=-1.0)
    with pytest.raises(ValueError, match="main_loss"):
        losses.aamu_loss(jnp.ones(2), jnp.ones(3), jnp.ones(3))
