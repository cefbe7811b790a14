"""Classification losses (per example, masked)."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _check_logits(logits: jax.Array, name: str = "logits") -> None:
    if logits.ndim < 1:
        raise ValueError(f"{name} must have a class axis, got shape {logits.shape}.")


def _apply_where(values: jax.Array, where: ArrayLike | None) -> jax.Array:
    if where is None:
        return values
    where = jnp.asarray(where)
    if where.shape != values.shape:
        raise ValueError(
            f"where has shape {where.shape}, expected {values.shape} (one per example)."
        )
    return jnp.where(where, values, 0.0)


def cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels.

    Args:
      logits: ``[..., num_classes]`` unnormalised scores.
      labels: ``[...]`` integer class labels.
      where: optional boolean mask ``[...]``; masked entries are 0.

    Returns:
      ``[...]`` losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0])  # log 4
      1.386...
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    _check_logits(logits)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels has shape {labels.shape}, expected {logits.shape[:-1]} to match"
            f" logits {logits.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
    logp = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return _apply_where(loss, where)


def soft_cross_entropy(
    logits: ArrayLike, targets: ArrayLike, *, where: ArrayLike | None = None
) -> jax.Array:
    """Per-example cross-entropy ``-sum_y q(y) log p(y)`` against soft targets.

    Args:
      logits: ``[..., num_classes]``.
      targets: ``[..., num_classes]`` probability vectors.
      where: optional mask ``[...]``.
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    _check_logits(logits)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets has shape {targets.shape}, expected logits' {logits.shape}."
        )
    logp = jax.nn.log_softmax(logits, axis=-1)
    # 0 * log p is 0 even where p underflows.
    loss = -jnp.sum(jnp.where(targets > 0, targets * logp, 0.0), axis=-1)
    return _apply_where(loss, where)


def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Per-example ``KL(p_teacher || p_student)`` at a temperature, times ``T**2``.

    This is PyTorch's ``KLDivLoss`` on log-softmax(student / T) against
    softmax(teacher / T), scaled by ``T**2`` as in distillation ("DistillKL").
    """
    s = jnp.asarray(student_logits) / temperature
    t = jnp.asarray(teacher_logits) / temperature
    if s.shape != t.shape:
        raise ValueError(
            f"student_logits {s.shape} and teacher_logits {t.shape} differ."
        )
    log_ps = jax.nn.log_softmax(s, axis=-1)
    log_pt = jax.nn.log_softmax(t, axis=-1)
    kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1) * temperature**2
    return _apply_where(kl, where)


def masked_mean(values: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """Mean of ``values`` over entries where ``mask`` is True (0 if none).

    Masked entries are selected away (``jnp.where``), not multiplied by 0, so
    a non-finite value in a masked slot cannot leak in as NaN.
    """
    values = jnp.asarray(values)
    if mask is None:
        return jnp.mean(values)
    mask = jnp.asarray(mask, bool)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / jnp.maximum(jnp.sum(mask).astype(values.dtype), 1.0)
