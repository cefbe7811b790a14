"""Optimisers with PyTorch semantics, and learning-rate schedules.

``sgd`` couples weight decay the way ``torch.optim.SGD`` does: the decay term
``wd * theta`` is added to the gradient *before* momentum (dampening 0).
"""

from collections.abc import Sequence

import optax

SCHEDULES = ("constant", "cosine", "step", "warmup_cosine")


def schedule(
    learning_rate: float,
    *,
    kind: str = "constant",
    total_steps: int | None = None,
    warmup_steps: int = 0,
    boundaries: Sequence[int] = (),
    gamma: float = 0.1,
) -> optax.Schedule:
    """Builds a learning-rate schedule (one value per optimiser step).

    Args:
      learning_rate: peak / initial learning rate.
      kind: ``"constant"``, ``"cosine"`` (decay to 0 over ``total_steps``),
        ``"step"`` (multiply by ``gamma`` at each step in ``boundaries``), or
        ``"warmup_cosine"`` (linear warm-up for ``warmup_steps`` then cosine).
      total_steps: length of the cosine schedules.
      warmup_steps: warm-up length (``warmup_cosine`` and ``cosine``).
      boundaries: step indices for ``"step"``.
      gamma: multiplicative factor for ``"step"``.

    Examples:
      >>> s = schedule(0.1, kind="step", boundaries=[10], gamma=0.1)
      >>> round(float(s(0)), 4), round(float(s(10)), 4)
      (0.1, 0.01)
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    if kind == "constant":
        return optax.constant_schedule(learning_rate)
    if kind in ("cosine", "warmup_cosine"):
        if not total_steps or total_steps < 1:
            raise ValueError(f"total_steps is required for kind={kind!r}.")
        if warmup_steps:
            return optax.warmup_cosine_decay_schedule(
                0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1)
            )
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if kind == "step":
        return optax.piecewise_constant_schedule(
            learning_rate, {int(b): gamma for b in boundaries}
        )
    raise ValueError(f"unknown schedule kind {kind!r}; valid: {SCHEDULES}.")


def sgd(
    learning_rate: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """SGD with momentum and coupled (L2) weight decay, as ``torch.optim.SGD``."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)
