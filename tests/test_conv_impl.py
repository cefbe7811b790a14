"""Tests for models._layers.canonical_conv: same values and gradients as lax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxunlearn import models
from jaxunlearn.models import _layers

DN = ("NHWC", "HWIO", "NHWC")
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _lax(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


def _canonical(x, w, padding):
    return _layers.canonical_conv(x, w, (1, 1), padding, None, None, DN)


@pytest.mark.parametrize(
    "kernel,padding",
    [((3, 3), "SAME"), ((3, 3), "VALID"), ((1, 1), "SAME"), ((3, 2), ((2, 0), (1, 1)))],
)
def test_value_and_grads_equal_lax(rng, kernel, padding):
    x = jnp.asarray(rng.standard_normal((3, 7, 6, 4), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((*kernel, 4, 5), dtype=np.float32))

    def loss(conv):
        return jax.jit(
            jax.value_and_grad(
                lambda x, w: jnp.sum(jnp.sin(conv(x, w, padding))), argnums=(0, 1)
            )
        )

    (v1, (dx1, dw1)) = loss(_lax)(x, w)
    (v2, (dx2, dw2)) = loss(_canonical)(x, w)
    np.testing.assert_allclose(v2, v1, **TOL)
    np.testing.assert_allclose(dx2, dx1, **TOL)
    np.testing.assert_allclose(dw2, dw1, **TOL)


def test_unsupported_cases_fall_back_to_lax(rng):
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 4), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 4), dtype=np.float32))
    kw = {"dimension_numbers": DN, "feature_group_count": 2}
    for strides in ((2, 2), (1, 1)):  # strided; grouped
        got = _layers.canonical_conv(x, w, strides, "SAME", **kw)
        want = lax.conv_general_dilated(x, w, strides, "SAME", **kw)
        np.testing.assert_array_equal(got, want)


class _BNCNN(nn.Module):
    """Two ``Conv3x3-BN-ReLU`` blocks with pooling and a head (like ``cnn``)."""

    conv_impl: str

    @nn.compact
    def __call__(self, x, train=False, return_features=False):
        conv_fn = _layers.conv_general_dilated_for(self.conv_impl)
        for i, width in enumerate((4, 6)):
            x = nn.Conv(width, (3, 3), name=f"conv{i}", conv_general_dilated=conv_fn)(x)
            x = _layers.normalize(x, "batch", train, name=f"bn{i}")
            x = _layers.max_pool2x2(nn.relu(x))
        features = _layers.global_avg_pool(x)
        logits = nn.Dense(3, name="head")(features)
        return (logits, features) if return_features else logits


def _grads(conv_impl, variables, x, y):
    apply_fn = models.make_apply_fn(_BNCNN(conv_impl))

    def loss(params, x):
        logits, new = apply_fn({**variables, "params": params}, x, train=True)
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
        return ce, new["batch_stats"]

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)


def test_bn_cnn_gradients_equal_lax_under_jit_and_vmap(rng):
    x = jnp.asarray(rng.standard_normal((2, 4, 8, 8, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 3, (2, 4)), jnp.int32)
    init = jax.jit(lambda key: models.init(_BNCNN("lax"), key, x[0]))
    variables = init(jax.random.key(0))  # one compile, not one per op
    assert "batch_stats" in variables

    def both(conv_impl):  # one program: an unbatched call and a vmapped one
        def f(x, y):
            return _grads(conv_impl, variables, x, y)

        return jax.jit(lambda x, y: (f(x[0], y[0]), jax.vmap(f)(x, y)))(x, y)

    want, got = both("lax"), both("canonical")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)


def test_conv_grads_in_scan_are_canonical(rng):
    # XLA:CPU runs non-canonical convolutions (JAX's transpose rules) inside
    # while loops as naive loops; canonical_conv's VJP keeps them NHWC/HWIO.
    x = jnp.zeros((2, 6, 6, 3), jnp.float32)
    w = jnp.zeros((3, 3, 3, 4), jnp.float32)

    def scanned(conv):
        def body(w, _):
            return w - jax.grad(lambda w: jnp.sum(conv(x, w, "SAME") ** 2))(w), None

        return jax.jit(lambda w: lax.scan(body, w, None, length=2)[0])

    def labels(conv):
        text = scanned(conv).lower(w).as_text(dialect="hlo")
        return {
            ln.split("dim_labels=")[1].split(",")[0]
            for ln in text.splitlines()
            if "convolution(" in ln
        }

    assert labels(_canonical) == {"b01f_01io->b01f"}
    assert labels(_lax) != {"b01f_01io->b01f"}


def test_conv_general_dilated_for():
    assert _layers.conv_general_dilated_for("lax") is None
    assert _layers.conv_general_dilated_for("canonical") is _layers.canonical_conv
    auto = _layers.conv_general_dilated_for("auto")
    if jax.default_backend() == "cpu":
        assert auto is _layers.canonical_conv
    else:
        assert auto is None
    with pytest.raises(ValueError, match="conv_impl"):
        _layers.conv_general_dilated_for("winograd")
