"""RWFT target distributions: move the forget classes' probability mass away.

References:
  Wang, Ebrahimpour-Boroojeny, Sundaram, "Reweighted Output Distributions for
  Class Unlearning" (arXiv 2506.20893), Eqs. 3 and 5-6.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

STRATEGIES = ("proportional", "max")


def _forget_mask(forget_classes, num_classes: int) -> jax.Array:
    if isinstance(forget_classes, bool):
        raise TypeError(f"forget_classes must be ints, got {forget_classes!r}.")
    if isinstance(forget_classes, int):
        forget_classes = (forget_classes,)
    if not isinstance(forget_classes, Sequence | jax.Array) or isinstance(
        forget_classes, str
    ):
        raise TypeError(
            f"forget_classes must be an int or a sequence of ints, got"
            f" {forget_classes!r}."
        )
    classes = [int(c) for c in forget_classes]
    if not classes:
        raise ValueError("forget_classes is empty.")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"forget_classes {bad} out of range for {num_classes} classes."
        )
    if len(set(classes)) >= num_classes:
        raise ValueError("forget_classes covers every class: nothing to keep.")
    return jnp.zeros((num_classes,), bool).at[jnp.asarray(classes)].set(True)


def reweighted_targets(
    logits: ArrayLike,
    forget_classes: int | Sequence[int],
    *,
    strategy: str = "proportional",
) -> jax.Array:
    """RWFT target distribution q* from the frozen original model's logits.

    * ``"proportional"`` (Eq. 3): the forget classes get probability 0 and the
      retained classes are renormalised, q*(y) = p(y) / (1 - sum_f p(f)).
      Computed as a softmax over the logits with the forget logits masked to
      -inf, which is the same distribution but stays exact when p(forget) is
      close to 1 (no 0 / 0).
    * ``"max"`` (Eqs. 5-6): the forget mass is moved onto the most likely
      retained class, y_max = argmax_{y not forgotten} p(y); every other class
      keeps its original probability.

    Args:
      logits: ``[..., C]`` logits of the frozen original model (not of the
        model being trained, or the target drifts).
      forget_classes: an int or a sequence of ints (several classes are
        renormalised together).
      strategy: ``"proportional"`` or ``"max"``.

    Returns:
      ``[..., C]`` probability vectors (rows sum to 1, forget columns exactly 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> q = reweighted_targets(jnp.log(jnp.array([[0.5, 0.3, 0.2]])), 0)
      >>> [round(float(v), 3) for v in q[0]]
      [0.0, 0.6, 0.4]
      >>> q = reweighted_targets(jnp.log(jnp.array([[0.5, 0.3, 0.2]])), 0,
      ...                        strategy="max")
      >>> [round(float(v), 3) for v in q[0]]
      [0.0, 0.8, 0.2]
    """
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must be [..., C] with C >= 2, got shape {logits.shape}."
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    forget = _forget_mask(forget_classes, logits.shape[-1])
    if strategy == "proportional":
        masked = jnp.where(forget, -jnp.inf, logits)
        return jax.nn.softmax(masked, axis=-1)
    probs = jax.nn.softmax(logits, axis=-1)
    kept = jnp.where(forget, 0.0, probs)
    top = jnp.argmax(jnp.where(forget, -jnp.inf, logits), axis=-1)
    moved = 1.0 - jnp.sum(kept, axis=-1)  # the forget mass, computed stably
    return (
        kept
        + jax.nn.one_hot(top, logits.shape[-1], dtype=kept.dtype) * moved[..., None]
    )
