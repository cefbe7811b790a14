"""Distribution-matching losses of A-AMU: soft ECDF, probit transform, MMD.

The accelerated unlearning objective (A-AMU, the Blend + A-AMU paper) pushes
the distribution of the per-example losses on the forget set towards the one
on unseen data. Losses are first "Gaussianised" by a differentiable
probability-integral transform (:func:`probit_transform`: the standard-normal
quantile of a sigmoid-smoothed empirical CDF), then compared with a Gaussian
kernel MMD (:func:`gaussian_mmd2`). :func:`aamu_loss` assembles the objective.

Every function takes ``where`` masks for padded slots; a masked slot
influences nothing (garbage there, NaN included, leaves values and gradients
unchanged).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jax.typing import ArrayLike

PROBIT_EPS = 1e-7
"""Soft-CDF values are clipped to ``[eps, 1 - eps]`` before the probit."""

PROBIT_CLIP = 60.0
"""Reference-code clamp of the probit output (it never binds after the clip
of the CDF: ``ndtri(1 - 1e-7)`` is about 5.2)."""


def _vector(name: str, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must be a vector [n], got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _where(name: str, where, n: int) -> jax.Array:
    if where is None:
        return jnp.ones((n,), bool)
    where = jnp.asarray(where, bool)
    if where.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got {where.shape}.")
    return where


def _positive(name: str, value) -> None:
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, got {value!r}.")
    if isinstance(value, int | float) and not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")


def soft_ecdf(
    x: ArrayLike,
    *,
    temperature: float | jax.Array,
    relu: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Sigmoid-smoothed empirical CDF of a sample, evaluated at its points.

    ``F(x_i) = mean_j sigmoid((x_i - x_j) / temperature)``, the mean over the
    real points ``j`` (the diagonal ``j = i`` included, as in the empirical
    CDF). As ``temperature -> 0`` it tends to the (mid-rank) empirical CDF.
    ``relu=True`` is the reference code's variant ``sigmoid(relu(x_i - x_j) /
    t)``: every ``j`` with ``x_j >= x_i`` contributes ``0.5``, so values lie
    in ``[0.5, 1)`` and the probit of them is half-normal-like.

    Args:
      x: sample ``[n]``.
      temperature: smoothing scale ``t > 0`` (the reference's ``k = 2`` is
        ``t = 0.5``); may be a traced scalar.
      relu: reference-code variant (see above).
      where: optional bool ``[n]``: the real points; masked points neither
        count in the means nor get meaningful values.

    Returns:
      ``[n]`` values in ``(0, 1)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxunlearn import losses
      >>> f = losses.soft_ecdf(jnp.array([0.0, 1.0, 2.0]), temperature=1e-3)
      >>> [round(float(v), 3) for v in f]
      [0.167, 0.5, 0.833]
    """
    x = _vector("x", x)
    _positive("temperature", temperature)
    where = _where("where", where, x.shape[0])
    x = jnp.where(where, x, jnp.zeros_like(x))
    d = x[:, None] - x[None, :]
    if relu:
        d = jax.nn.relu(d)
    s = jax.nn.sigmoid(d / temperature)
    w = where.astype(x.dtype)
    return (s @ w) / jnp.maximum(jnp.sum(w), 1.0)


def probit_transform(
    x: ArrayLike,
    *,
    temperature: float | jax.Array,
    relu: bool = False,
    log_input: bool = False,
    where: ArrayLike | None = None,
    eps: float = PROBIT_EPS,
    clip: float | None = PROBIT_CLIP,
) -> jax.Array:
    """Differentiable probability-integral transform towards ``N(0, 1)``.

    ``z_i = ndtri(clip(F(x_i), eps, 1 - eps))`` with ``F`` the
    :func:`soft_ecdf`; for a continuous sample and a small temperature, ``z``
    is close to standard normal whatever the distribution of ``x`` (the
    paper's form). ``log_input=True`` first maps ``x -> log(1 + x + 1e-8)``
    (the reference code's input map for losses; monotone, so it changes
    ``z`` only through the temperature's scale). ``relu=True`` is the
    reference code's CDF variant (:func:`soft_ecdf`). The output is clamped
    to ``[-clip, clip]`` (reference: 60; None disables).

    Args:
      x: sample ``[n]`` (e.g. per-example losses).
      temperature: soft-ECDF temperature ``> 0``.
      relu, log_input: the reference code's variants (see above).
      where: optional bool ``[n]`` of real points.
      eps: clip of the CDF values away from 0 and 1 (finite output).
      clip: clamp of the output, or None.

    Returns:
      ``[n]`` finite values.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import losses
      >>> x = jax.random.exponential(jax.random.key(0), (2000,))
      >>> z = losses.probit_transform(x, temperature=1e-3)
      >>> bool(abs(z.mean()) < 0.05), bool(abs(z.std() - 1) < 0.05)
      (True, True)
    """
    x = _vector("x", x)
    if not 0 < eps < 0.5:
        raise ValueError(f"`eps` must be in (0, 0.5), got {eps!r}.")
    where = _where("where", where, x.shape[0])
    x = jnp.where(where, x, jnp.zeros_like(x))
    if log_input:
        x = jnp.log1p(jnp.maximum(x, 0.0) + 1e-8)
    f = soft_ecdf(x, temperature=temperature, relu=relu, where=where)
    z = ndtri(jnp.clip(f, eps, 1.0 - eps))
    if clip is not None:
        z = jnp.clip(z, -clip, clip)
    return z


def _points(name: str, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape [n] or [n, d], got {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def gaussian_mmd2(
    x: ArrayLike,
    y: ArrayLike,
    *,
    bandwidth: float | jax.Array = 1.0,
    where_x: ArrayLike | None = None,
    where_y: ArrayLike | None = None,
) -> jax.Array:
    """Biased (V-statistic) squared MMD with a Gaussian kernel.

    ``MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` over the real
    points (diagonals included), ``k(a, b) = exp(-||a - b||^2 / (2 s^2))``
    with ``s = bandwidth``. Non-negative (up to rounding), 0 for equal
    samples.

    Args:
      x: ``[n]`` or ``[n, d]``.
      y: ``[m]`` or ``[m, d]`` (same ``d``).
      bandwidth: kernel width ``s > 0``.
      where_x, where_y: optional bool masks of the real points.

    Returns:
      A scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxunlearn import losses
      >>> x = jnp.array([0.0, 1.0])
      >>> float(losses.gaussian_mmd2(x, x))
      0.0
      >>> round(float(losses.gaussian_mmd2(x[:1], x[:1] + 10.0)), 4)
      2.0
    """
    x = _points("x", x)
    y = _points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`x` and `y` must have the same dimension, got {x.shape} and {y.shape}."
        )
    _positive("bandwidth", bandwidth)
    wx = _where("where_x", where_x, x.shape[0])
    wy = _where("where_y", where_y, y.shape[0])
    x = jnp.where(wx[:, None], x, jnp.zeros_like(x))
    y = jnp.where(wy[:, None], y, jnp.zeros_like(y))
    px = wx.astype(x.dtype) / jnp.maximum(jnp.sum(wx), 1)
    py = wy.astype(y.dtype) / jnp.maximum(jnp.sum(wy), 1)
    scale = 2.0 * jnp.square(bandwidth)

    def mean_kernel(a, pa, b, pb):
        d2 = jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)
        return pa @ jnp.exp(-d2 / scale) @ pb

    return (
        mean_kernel(x, px, x, px)
        + mean_kernel(y, py, y, py)
        - 2.0 * mean_kernel(x, px, y, py)
    )


def aamu_loss(
    main_loss: ArrayLike,
    forget_losses: ArrayLike,
    unseen_losses: ArrayLike,
    *,
    weight: float | jax.Array = 34.0,
    temperature: float | jax.Array = 0.5,
    relu: bool = False,
    log_input: bool = False,
    bandwidth: float | jax.Array = 1.0,
    square: bool = True,
    where_forget: ArrayLike | None = None,
    where_unseen: ArrayLike | None = None,
) -> tuple[jax.Array, Mapping[str, jax.Array]]:
    """The A-AMU objective: ``main^2 + weight * MMD^2(z_unseen, z_forget)``.

    ``main_loss`` is the batch-mean retain loss, squared as a whole (the
    paper squares the batch mean, not each example; ``square=False`` keeps
    it). ``z`` are the :func:`probit_transform` of the per-example losses of a
    forget sample and of a class-matched unseen sample; the unseen branch is
    a constant (``stop_gradient``): only the forget losses move.

    Args:
      main_loss: scalar retain loss (batch mean).
      forget_losses: ``[n]`` per-example losses on the forget sample.
      unseen_losses: ``[m]`` per-example losses on the unseen sample.
      weight: ``lambda`` (reference 34).
      temperature: soft-ECDF temperature (reference ``k = 2``: ``t = 0.5``).
      relu, log_input: reference-code transform variants
        (:func:`probit_transform`).
      bandwidth: MMD kernel width (reference 1).
      square: square the main loss (default, the paper's A-AMU).
      where_forget, where_unseen: masks of the real losses.

    Returns:
      ``(loss, {"main_loss", "mmd2"})``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxunlearn import losses
      >>> same = jnp.array([0.1, 2.0, 0.5])
      >>> loss, parts = losses.aamu_loss(jnp.float32(2.0), same, same)
      >>> float(loss), float(parts["mmd2"])
      (4.0, 0.0)
    """
    main_loss = jnp.asarray(main_loss)
    if main_loss.ndim != 0:
        raise ValueError(f"`main_loss` must be a scalar, got shape {main_loss.shape}.")
    kw = dict(temperature=temperature, relu=relu, log_input=log_input)
    z_forget = probit_transform(forget_losses, where=where_forget, **kw)
    z_unseen = probit_transform(
        jax.lax.stop_gradient(jnp.asarray(unseen_losses)), where=where_unseen, **kw
    )
    mmd2 = gaussian_mmd2(
        jax.lax.stop_gradient(z_unseen),
        z_forget,
        bandwidth=bandwidth,
        where_x=where_unseen,
        where_y=where_forget,
    )
    main = jnp.square(main_loss) if square else main_loss
    return main + weight * mmd2, {"main_loss": main_loss, "mmd2": mmd2}
