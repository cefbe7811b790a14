import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import losses


def test_cross_entropy_known_values_and_mask():
    logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    labels = jnp.array([2, 0])
    ce = jax.jit(losses.cross_entropy)(logits, labels)
    np.testing.assert_allclose(ce[0], np.log(4.0), rtol=1e-6)
    np.testing.assert_allclose(ce[1], np.log1p(3 * np.exp(-10.0)), atol=1e-7)
    masked = losses.cross_entropy(logits, labels, where=jnp.array([True, False]))
    assert float(masked[1]) == 0.0
    assert float(losses.masked_mean(ce, jnp.array([True, False]))) == pytest.approx(
        float(ce[0])
    )


def test_soft_ce_equals_ce_for_one_hot_and_vmaps():
    key = jax.random.key(0)
    logits = jax.random.normal(key, (6, 5))
    labels = jnp.arange(6) % 5
    soft = losses.soft_cross_entropy(logits, jax.nn.one_hot(labels, 5))
    np.testing.assert_allclose(soft, losses.cross_entropy(logits, labels), rtol=1e-6)
    vm = jax.vmap(lambda z, y: losses.cross_entropy(z[None], y[None])[0])(
        logits, labels
    )
    np.testing.assert_allclose(vm, losses.cross_entropy(logits, labels), rtol=1e-6)


def test_kl_zero_for_identical_and_positive_otherwise():
    a = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_allclose(
        losses.kl_divergence(a, a, temperature=2.0), 0, atol=1e-6
    )
    assert bool(jnp.all(losses.kl_divergence(a, -a) > 0))


def test_masked_mean_empty_mask_is_zero():
    assert float(losses.masked_mean(jnp.ones(3), jnp.zeros(3, bool))) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="labels"):
        losses.cross_entropy(jnp.zeros((3, 2)), jnp.zeros((4,), int))
    with pytest.raises(TypeError, match="labels"):
        losses.cross_entropy(jnp.zeros((3, 2)), jnp.zeros((3,)))
    with pytest.raises(ValueError, match="where"):
        losses.cross_entropy(jnp.zeros((3, 2)), jnp.zeros((3,), int), where=jnp.ones(2))
