import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import losses


@pytest.fixture
def logits():
    return jax.random.normal(jax.random.key(0), (64, 6)) * 3.0


@pytest.mark.parametrize("strategy", losses.STRATEGIES)
@pytest.mark.parametrize("forget", [2, (0, 4), [1, 3, 5]])
def test_rows_sum_to_one_and_forget_columns_are_zero(logits, strategy, forget):
    q = jax.jit(lambda z: losses.reweighted_targets(z, forget, strategy=strategy))(
        logits
    )
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    cols = np.atleast_1d(forget)
    assert np.all(np.asarray(q)[:, cols] == 0.0)
    assert np.all(np.asarray(q) >= 0)


def test_proportional_preserves_retained_ratios(logits):
    p = np.asarray(jax.nn.softmax(logits))
    q = np.asarray(losses.reweighted_targets(logits, (0, 4)))
    keep = [1, 2, 3, 5]
    want = p[:, keep] / p[:, keep].sum(-1, keepdims=True)
    np.testing.assert_allclose(q[:, keep], want, rtol=1e-5)


def test_max_moves_forget_mass_to_top_retained_class(logits):
    p = np.asarray(jax.nn.softmax(logits))
    q = np.asarray(losses.reweighted_targets(logits, (0, 4), strategy="max"))
    keep = np.array([1, 2, 3, 5])
    top = keep[np.argmax(p[:, keep], axis=1)]
    rows = np.arange(len(p))
    np.testing.assert_allclose(
        q[rows, top], p[rows, top] + p[:, 0] + p[:, 4], rtol=1e-5
    )
    others = np.ones_like(p, bool)
    others[rows, top] = False
    others[:, [0, 4]] = False
    np.testing.assert_allclose(q[others], p[others], rtol=1e-5)


def test_stable_when_the_forget_class_has_all_the_mass():
    z = jnp.array([[200.0, 0.0, -1.0], [1e4, 3.0, 3.0]])
    for strategy in losses.STRATEGIES:
        q = losses.reweighted_targets(z, 0, strategy=strategy)
        assert bool(jnp.all(jnp.isfinite(q)))
        np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    q = losses.reweighted_targets(z, 0)
    np.testing.assert_allclose(
        q[0, 1:], jax.nn.softmax(jnp.array([0.0, -1.0])), rtol=1e-6
    )


def test_gradients_finite_at_extreme_logits():
    z_orig = jnp.array([[1e4, -1e4, 0.0], [0.0, 50.0, -50.0]])
    q = losses.reweighted_targets(z_orig, 0)

    def loss(z):
        return losses.soft_cross_entropy(z, q).mean()

    g = jax.grad(loss)(jnp.array([[80.0, -80.0, 0.0], [0.0, 1e3, -1e3]]))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_vmap_equals_batch(logits):
    f = lambda z: losses.reweighted_targets(z, 1, strategy="max")  # noqa: E731
    np.testing.assert_allclose(jax.vmap(f)(logits), f(logits), rtol=1e-6)


def test_bad_input(logits):
    with pytest.raises(ValueError, match="strategy"):
        losses.reweighted_targets(logits, 0, strategy="nope")
    with pytest.raises(ValueError, match="out of range"):
        losses.reweighted_targets(logits, 6)
    with pytest.raises(ValueError, match="every class"):
        losses.reweighted_targets(logits, range(6))
    with pytest.raises(TypeError, match="forget_classes"):
        losses.reweighted_targets(logits, 1.5)
