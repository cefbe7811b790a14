"""Private building blocks shared by the model families.

Holds the input and option checks, the BatchNorm/GroupNorm factory and the 2x2
pooling helpers that skip pooling on spatial axes already of size 1 (so models
built for 32x32 images also run on 8x8 digits).

Also holds :func:`canonical_conv`, a drop-in for ``lax.conv_general_dilated``
whose gradient convolutions are all in XLA:CPU's canonical layout, and
:func:`conv_general_dilated_for`, which picks it (or ``lax``) by ``conv_impl``.
"""

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
GN_EPSILON = 1e-5
NORMS = ("batch", "instance", "group")


def check_num_classes(num_classes: Any) -> None:
    """Raises ``ValueError`` unless ``num_classes`` is an int >= 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(
            f"`num_classes` must be an int >= 2, got {num_classes!r} "
            f"of type {type(num_classes).__name__}."
        )
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes}.")


def check_positive_ints(name: str, values: Any, *, allow_empty: bool) -> tuple:
    """Returns ``values`` as a tuple after checking it holds positive ints."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"`{name}` must be a sequence of ints, got {values!r}.")
    values = tuple(values)
    if not allow_empty and not values:
        raise ValueError(f"`{name}` must not be empty.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"`{name}` must hold positive ints, got {values!r}.")
    return values


def check_positive_int(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def check_images(x: jax.Array) -> None:
    """Raises ``ValueError`` unless ``x`` is a rank-4 ``[N, H, W, C]`` batch."""
    if jnp.ndim(x) != 4:
        raise ValueError(
            f"`x` must be an image batch of shape [N, H, W, C], got shape "
            f"{jnp.shape(x)}."
        )


def num_groups_for(channels: int, max_groups: int = 32) -> int:
    """Largest divisor of ``channels`` that is at most ``max_groups``.

    Equals ``min(max_groups, channels)`` whenever that divides ``channels``
    (all power-of-two widths), so GroupNorm never fails on odd widths.
    """
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def normalize(
    x: jax.Array, kind: str, train: bool, name: str | None = None
) -> jax.Array:
    """Applies the normalisation layer ``kind`` to ``x`` (``[N, H, W, C]``).

    Must be called inside a compact ``nn.Module`` method.

    Args:
      x: activations ``[N, H, W, C]``.
      kind: ``"batch"`` (BatchNorm, momentum 0.9, epsilon 1e-5, running
        averages used when ``train`` is False), ``"instance"`` (GroupNorm with
        one channel per group) or ``"group"`` (GroupNorm with
        ``min(32, C)`` groups, see :func:`num_groups_for`).
      train: whether the model runs in training mode.
      name: optional submodule name.

    Returns:
      The normalised activations, same shape as ``x``.
    """
    channels = x.shape[-1]
    if kind == "batch":
        # the mode is a call argument (not a constructor one), so an
        # interceptor can run a frozen group's BatchNorm in eval mode
        return nn.BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(
            x, use_running_average=not train
        )
    if kind == "instance":
        return nn.GroupNorm(num_groups=channels, epsilon=GN_EPSILON, name=name)(x)
    if kind == "group":
        return nn.GroupNorm(
            num_groups=num_groups_for(channels), epsilon=GN_EPSILON, name=name
        )(x)
    raise ValueError(f"`norm` must be one of {NORMS}, got {kind!r}.")


def _pool2x2(x: jax.Array, reduce: Callable[..., jax.Array]) -> jax.Array:
    """Non-overlapping 2x2 pooling ("VALID", odd edges dropped) via reshape.

    A spatial axis of size 1 is pooled with a window of 1 instead, so tiny
    inputs never fail. Written with reshape + reduce (not ``nn.avg_pool``) so
    it is dtype-safe under ``jax_numpy_dtype_promotion="strict"``.
    """
    n, h, w, c = x.shape
    wh, ww = (2 if h > 1 else 1), (2 if w > 1 else 1)
    if (wh, ww) == (1, 1):
        return x
    ho, wo = h // wh, w // ww
    x = x[:, : ho * wh, : wo * ww, :]
    x = jnp.reshape(x, (n, ho, wh, wo, ww, c))
    return reduce(x, axis=(2, 4))


def max_pool2x2(x: jax.Array) -> jax.Array:
    """2x2/stride-2 max pooling; spatial axes of size 1 are left alone."""
    return _pool2x2(x, jnp.max)


def avg_pool2x2(x: jax.Array) -> jax.Array:
    """2x2/stride-2 average pooling; spatial axes of size 1 are left alone."""
    return _pool2x2(x, jnp.mean)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes: ``[N, H, W, C] -> [N, C]``."""
    return jnp.mean(x, axis=(1, 2))


CONV_IMPLS = ("auto", "lax", "canonical")
_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, w, pads, precision):
    return lax.conv_general_dilated(
        x, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
    )


def _conv_nhwc_fwd(x, w, pads, precision):
    return _conv_nhwc(x, w, pads, precision), (x, w)


def _conv_nhwc_bwd(pads, precision, res, g):
    x, w = res
    kh, kw = w.shape[:2]
    (pt, pb), (pl, pr) = pads
    # input gradient: correlate g with the flipped kernel, I/O swapped
    w_t = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
    dx = lax.conv_general_dilated(
        g,
        w_t,
        (1, 1),
        ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)),
        dimension_numbers=_NHWC,
        precision=precision,
    )
    # weight gradient: a conv with channels as the batch and the batch as the
    # contracted feature axis, operands transposed so XLA sees NHWC/HWIO
    dw = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)),
        jnp.transpose(g, (1, 2, 0, 3)),
        (1, 1),
        pads,
        dimension_numbers=_NHWC,
        precision=precision,
    )
    return dx, jnp.transpose(dw, (1, 2, 0, 3))


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def canonical_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated`` with a hand-written, layout-canonical VJP.

    Same signature and forward value as ``lax.conv_general_dilated`` (pass it
    as ``nn.Conv(..., conv_general_dilated=canonical_conv)``). For 2-D
    ``NHWC``/``HWIO`` convolutions with stride 1, no dilation and one group,
    the input and weight gradients are written as forward convolutions in
    ``NHWC``/``HWIO`` layout with explicit transposes. JAX's own transpose
    rules emit convolutions with permuted dimension labels, which XLA:CPU
    rewrites to the canonical layout only outside loops: inside ``lax.scan``
    or a while loop they run as naive loops, 30-80x slower (see
    ``experiments/results/bench_conv_cpu.json``). Outside loops both give the
    same XLA program up to float32 rounding. Other cases call
    ``lax.conv_general_dilated`` unchanged.
    """
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = (
        lhs.ndim == 4
        and dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        and tuple(window_strides) == (1, 1)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and preferred_element_type is None
        and lhs.dtype == rhs.dtype
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_nhwc(lhs, rhs, pads, precision)


def conv_general_dilated_for(conv_impl: str) -> Callable[..., jax.Array] | None:
    """The ``conv_general_dilated`` argument of ``nn.Conv`` for ``conv_impl``.

    ``"lax"``: None (flax's default, ``lax.conv_general_dilated``);
    ``"canonical"``: :func:`canonical_conv`; ``"auto"``: :func:`canonical_conv`
    when the default backend is the CPU, else None (GPUs keep ``lax``).
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"`conv_impl` must be one of {CONV_IMPLS}, got {conv_impl!r}.")
    if conv_impl == "auto":
        conv_impl = "canonical" if jax.default_backend() == "cpu" else "lax"
    return canonical_conv if conv_impl == "canonical" else None


def conv(features: int, kernel_size, **kwargs) -> nn.Conv:
    """``nn.Conv`` with the backend's convolution (:func:`conv_general_dilated_for`
    ``("auto")``): :func:`canonical_conv` on the CPU (whose gradients XLA:CPU
    runs fast also inside ``lax.scan``; the same values and gradients as
    ``lax``), ``lax.conv_general_dilated`` elsewhere."""
    impl = conv_general_dilated_for("auto")
    if impl is not None:
        kwargs["conv_general_dilated"] = impl
    return nn.Conv(features, kernel_size, **kwargs)
