"""Teacher-student baselines: Bad Teacher and SCRUB.

Both keep frozen teachers in ``state.extra`` (never differentiated, never
updated, always run in eval mode, so their forward passes touch no BatchNorm
statistics of the student) and train a student that starts from the original
model. The student's forward passes get the batch ``mask``, so padded slots
never enter its BatchNorm statistics.

References:
  Chundawat, Tarun, Mandal, Kankanhalli, "Can Bad Teaching Induce Forgetting?
  Unlearning in Deep Networks Using an Incompetent Teacher" (AAAI 2023).
  Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded Machine
  Unlearning" (NeurIPS 2023).
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn import losses
from jaxunlearn.methods._base import (
    Method,
    check_hparam,
    gradient_method,
    register,
    sgd_tx,
)
from jaxunlearn.types import ApplyFn, PyTree

VARIANTS = ("original", "dlfd_code")
"""``"original"``: the method as its paper describes it (the default);
``"dlfd_code"``: the DLFD repository's re-implementation of the baseline."""

_NO_PHASE_END = 2**31 - 1  # int32 max: no end to the max phase


def _check_callable(name: str, value) -> None:
    if not callable(value):
        raise TypeError(f"`{name}` must be callable, got {value!r}.")


def _check_variant(variant) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}.")


def _check_tx(tx) -> None:
    if tx is not None and not isinstance(tx, optax.GradientTransformation):
        raise TypeError(
            f"`tx` must be an optax.GradientTransformation or None, got {tx!r}."
        )


def _or(value, default):
    return default if value is None else value


def adam_tx(
    tx: optax.GradientTransformation | None,
    *,
    learning_rate: float,
    weight_decay: float,
) -> tuple[optax.GradientTransformation, float | None]:
    """Adam at unit rate with a sweepable learning rate (cf. ``sgd_tx``).

    Returns ``(tx, None)`` when the caller passed ``tx``; else ``(Adam(1.0)``
    with coupled L2 weight decay, as ``torch.optim.Adam(weight_decay=)``,
    ``learning_rate)``. Adam's update is ``-lr * m_hat / (sqrt(v_hat) + eps)``,
    linear in ``lr``, so scaling the unit-rate update by
    ``state.hparams["learning_rate"]`` (what ``gradient_method`` does) is
    Adam at that rate.
    """
    if tx is not None:
        return tx, None
    lr = check_hparam("learning_rate", learning_rate, low_open=True)
    wd = check_hparam("weight_decay", weight_decay)
    parts = [optax.add_decayed_weights(wd)] if wd else []
    return optax.chain(*parts, optax.adam(1.0)), lr


def _set_size(name: str, s) -> int | None:
    """Number of examples of a ``{"image", "label"}`` set (None for None)."""
    if s is None:
        return None
    if not isinstance(s, Mapping) or not ({"label", "image"} & set(s)):
        raise ValueError(f"`{name}` must be a mapping with 'label' or 'image'.")
    arr = s["label"] if "label" in s else s["image"]
    return int(len(arr))


def _teacher_logits(apply_fn, teacher, part):
    """Eval-mode logits of a frozen teacher (no gradient, no state update)."""
    logits, _ = apply_fn(teacher, part["image"], train=False, mask=part["mask"])
    return jax.lax.stop_gradient(logits)


@register("bad_teacher")
def bad_teacher(
    apply_fn: ApplyFn,
    *,
    init_fn: Callable[[jax.Array], PyTree] | None = None,
    temperature: float | None = None,
    variant: str = "original",
    tx: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
) -> Method:
    """Bad Teacher: distil from a competent teacher on retain, an incompetent one
    on forget.

    The competent teacher is a frozen copy of the original model (the
    variables passed to ``init``); the incompetent teacher is a randomly
    initialised model ``init_fn(key)`` drawn with ``init``'s ``key`` (and
    ``jax.random.key(0)`` when ``init`` gets no key, which is also what a
    method rebuilt by ``with_objective`` uses). Both are frozen in
    ``state.extra`` (``"teacher"``, ``"incompetent"``) and run in eval mode.
    The student starts from the original model.

    ``variant="original"`` (the paper's Eq. 3-4): each step forms the paper's
    combined batch, the retain batch followed by the forget batch, runs the
    student once over it in training mode (BatchNorm statistics over the real
    rows of both), and minimises ``KL(teacher_T || student_T)`` averaged over
    the combined batch's real rows, the competent teacher's output being the
    target on retain rows and the incompetent teacher's on forget rows. This
    is ``(sum_retain KL + sum_forget KL) / (n_retain + n_forget)``, the two
    masked means weighted by the number of real rows. No ``T**2`` factor (the
    paper's code has none). The paper trains on the forget set plus a random
    30% of the retain set for 1 epoch with Adam at lr 1e-4, ``T = 1``; here an
    epoch is one pass over the retain set (driver ``"retain"``) with the forget
    set cycled beside it, so retain and forget rows enter each batch at the
    two batch sizes' ratio (restrict the retain set with ``train.unlearn``'s
    ``include`` to reproduce the 30% subset).

    ``variant="dlfd_code"``: the DLFD repository's version. It loops over the
    retain set only (the forget batch is ignored) and minimises
    ``CE(student, y) + KL_T(good || student) - KL_T(bad || student)``, the KL
    terms at ``T = 4`` times ``T**2``, with Adam at lr 1e-3 and weight decay
    5e-4. The negative KL is unbounded below, so long runs diverge; this is a
    known property of that code, kept for comparison.

    Args:
      apply_fn: model apply function.
      init_fn: ``init_fn(key) -> variables`` of the same architecture (the
        incompetent teacher). Required.
      temperature: distillation temperature ``T`` (> 0), sweepable as
        ``state.hparams["temperature"]``. Default 1 (original), 4 (dlfd_code).
      variant: ``"original"`` or ``"dlfd_code"`` (see :data:`VARIANTS`).
      tx: optimiser replacing the default Adam.
      learning_rate: Adam's rate, sweepable as
        ``state.hparams["learning_rate"]``. Default 1e-4 (original), 1e-3
        (dlfd_code).
      weight_decay: Adam's coupled L2 weight decay. Default 0 (original),
        5e-4 (dlfd_code).

    References:
      Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in
      Deep Networks Using an Incompetent Teacher" (AAAI 2023).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> x = jnp.zeros((2, 2, 2, 1))
      >>> init_fn = lambda k: models.init(model, k, x)
      >>> m = methods.bad_teacher(models.make_apply_fn(model), init_fn=init_fn)
      >>> state = m.init(init_fn(jax.random.key(0)), key=jax.random.key(1))
      >>> sorted(state.extra)
      ['incompetent', 'teacher']
      >>> part = {"image": x, "label": jnp.zeros(2, int), "mask": jnp.ones(2, bool)}
      >>> state, metrics = m.step(state, {"retain": part, "forget": part},
      ...                         jax.random.key(2))
      >>> int(state.step), bool(jnp.isfinite(metrics["loss"]))
      (1, True)
    """
    _check_callable("apply_fn", apply_fn)
    if init_fn is None:
        raise ValueError(
            "bad_teacher needs `init_fn`=(key -> fresh variables) for its "
            "incompetent teacher."
        )
    _check_callable("init_fn", init_fn)
    _check_variant(variant)
    _check_tx(tx)
    original = variant == "original"
    temperature = check_hparam(
        "temperature", _or(temperature, 1.0 if original else 4.0), low_open=True
    )
    learning_rate = _or(learning_rate, 1e-4 if original else 1e-3)
    weight_decay = _or(weight_decay, 0.0 if original else 5e-4)

    def original_loss(variables, batch, key, hparams, extra, step):
        t = hparams["temperature"]
        r, f = batch["retain"], batch["forget"]
        target = jnp.concatenate(
            [
                _teacher_logits(apply_fn, extra["teacher"], r),
                _teacher_logits(apply_fn, extra["incompetent"], f),
            ]
        )
        mask = jnp.concatenate([r["mask"], f["mask"]])
        logits, variables = apply_fn(
            variables,
            jnp.concatenate([r["image"], f["image"]]),
            train=True,
            key=key,
            mask=mask,
        )
        kl = losses.kl_divergence(logits, target, temperature=t) / t**2
        n_r = r["mask"].shape[0]
        loss = losses.masked_mean(kl, mask)
        metrics = {
            "retain_kl": losses.masked_mean(kl[:n_r], r["mask"]),
            "forget_kl": losses.masked_mean(kl[n_r:], f["mask"]),
        }
        return loss, (variables, metrics)

    def dlfd_loss(variables, batch, key, hparams, extra, step):
        t = hparams["temperature"]
        r = batch["retain"]
        good = _teacher_logits(apply_fn, extra["teacher"], r)
        bad = _teacher_logits(apply_fn, extra["incompetent"], r)
        logits, variables = apply_fn(
            variables, r["image"], train=True, key=key, mask=r["mask"]
        )
        ce = losses.masked_mean(losses.cross_entropy(logits, r["label"]), r["mask"])
        kl_good = losses.masked_mean(
            losses.kl_divergence(logits, good, temperature=t), r["mask"]
        )
        kl_bad = losses.masked_mean(
            losses.kl_divergence(logits, bad, temperature=t), r["mask"]
        )
        loss = ce + kl_good - kl_bad
        metrics = {"retain_ce": ce, "good_kl": kl_good, "bad_kl": kl_bad}
        return loss, (variables, metrics)

    def make_extra(variables, key=None):
        key = jax.random.key(0) if key is None else key
        return {"teacher": variables, "incompetent": dict(init_fn(key))}

    tx, lr = adam_tx(tx, learning_rate=learning_rate, weight_decay=weight_decay)
    base = gradient_method(
        original_loss if original else dlfd_loss,
        tx,
        learning_rate=lr,
        hparams={"temperature": temperature},
        make_extra=make_extra,
    )

    def init(variables, *, key=None, **kwargs):
        state = base.init(variables, key=key, **kwargs)
        if key is None:
            return state
        extra = {**state.extra, "incompetent": dict(init_fn(key))}
        return dataclasses.replace(state, extra=extra)

    return base._replace(init=init)


@register("scrub")
def scrub(
    apply_fn: ApplyFn,
    *,
    alpha: float | None = None,
    gamma: float | None = None,
    msteps: int = 2,
    temperature: float | None = None,
    forget_weight: float = 1.0,
    variant: str = "original",
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-4,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    max_steps_per_epoch: int | None = None,
    forget_set: Mapping | None = None,
    retain_set: Mapping | None = None,
) -> Method:
    """SCRUB: a student moving away from the original on forget, towards it on
    retain.

    The student starts from the original model; the teacher is a frozen copy
    of it (``state.extra["teacher"]``, eval mode). Max steps, on the forget
    batch, maximise ``d = KL(teacher_T || student_T)`` (loss ``-d``). Min steps,
    on the retain batch, minimise ``alpha * KL(teacher_T || student_T) +
    gamma * CE(student, y)``. KL terms are batch means times ``T**2`` (the
    reference ``DistillKL``).

    Alternation granularity: the paper runs, in each of the first ``msteps``
    epochs, one max pass over the forget set (``ceil(n_forget / B)`` steps)
    and then one min pass over the retain set, and only min passes
    afterwards. Here the method is a single-objective gradient method driven
    by the retain set (so it composes with wrappers such as
    ``with_objective``), and the same structure is laid out on its step
    counter: an epoch is ``steps_per_epoch`` steps (one pass over retain,
    given to ``init`` by ``train.unlearn``); in each of the first ``msteps``
    epochs, the first ``max_steps_per_epoch`` steps are max steps on the
    forget batch and the rest min steps on the retain batch; afterwards every
    step is a min step. ``max_steps_per_epoch`` is, unless given explicitly,
    ``ceil(n_forget / n_retain * steps_per_epoch)`` from the sizes of the
    ``forget_set`` and ``retain_set`` context arguments, the length of a pass
    over the forget set at the retain batch size (capped at
    ``steps_per_epoch``: a forget set as large as the retain set makes whole
    max-phase epochs of max steps). Compared with the paper, an epoch has the
    same max steps but counts them inside the retain pass, so it takes
    ``max_steps_per_epoch`` fewer min steps. The step is chosen with
    ``lax.cond`` on ``state.step``; the numbers are int32 in ``state.extra``
    (``max_phase_steps = msteps * steps_per_epoch``, ``cycle_steps``,
    ``cycle_max_steps``: step ``s`` is a max step iff
    ``s < max_phase_steps`` and ``s % cycle_steps < cycle_max_steps``), so
    ``step`` is type-stable and vmappable.

    Fallback (the behaviour before the epoch structure): when the sizes are
    unknown (``forget_set`` or ``retain_set`` missing, or an empty retain
    set) and ``max_steps_per_epoch`` is not given, steps alternate one by one
    during the max phase, even steps (``state.step`` 0, 2, ...) max, odd
    steps min (``cycle_steps = 2``, ``cycle_max_steps = 1``). Without
    ``steps_per_epoch`` at ``init`` the epoch length is unknown: steps then
    alternate one by one for the whole run, whatever the other arguments.

    Metrics: ``max_step`` (1. on a max step, 0. on a min step), ``forget_kl``,
    ``retain_ce``, ``retain_kl``; the terms of the pass not taken are
    reported as 0.

    ``variant="dlfd_code"``, the DLFD repository's simplified SCRUB: the max
    step minimises ``-(gamma * CE + alpha * KL)`` on the forget batch and the
    min step ``gamma * CE + alpha * KL`` on retain, with ``alpha = 2``,
    ``gamma = 1`` and ``T = 1`` (KL without temperature); that repository
    trains 2 epochs at SGD lr 5e-4, momentum 0.9, weight decay 5e-4, each
    one max pass over the forget set then one min pass over the retain set,
    so its steps follow the same epoch structure as above.

    Args:
      apply_fn: model apply function.
      alpha: weight of the KL term of the min step (>= 0), sweepable.
        Default 0.001 (original), 2 (dlfd_code).
      gamma: weight of the retain cross-entropy (>= 0), sweepable. Default
        0.99 (original), 1 (dlfd_code).
      msteps: number of epochs (int >= 0) with max steps. Default 2.
      temperature: distillation temperature (> 0), sweepable. Default 4
        (original), 1 (dlfd_code).
      forget_weight: scale (>= 0, sweepable) of the max step's loss: 1 in
        Kurmanji et al.'s code, 0.2 in the Blend + A-AMU repository's SCRUB
        and A-SCRUB (``-0.2 * KL``).
      variant: ``"original"`` or ``"dlfd_code"`` (see :data:`VARIANTS`).
      tx, learning_rate, momentum, weight_decay: the optimiser (default SGD
        with coupled weight decay, sweepable rate; defaults from the SCRUB
        code: lr 5e-4, momentum 0.9, weight decay 5e-4).
      max_steps_per_epoch: number of max steps (int >= 0) at the start of
        each max-phase epoch; overrides the value from the set sizes.
      forget_set, retain_set: the forget and retain sets (mappings with
        ``"label"`` or ``"image"`` arrays; context arguments that
        ``methods.get`` callers pass), used only for their sizes.

    References:
      Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023),
      Sec. 3 and its code's defaults (``kd_T = 4``, ``gamma = 0.99``,
      ``alpha = 0.001``, ``msteps = 2``, SGD lr 5e-4).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> x = jnp.zeros((2, 2, 2, 1))
      >>> forget = {"label": jnp.zeros(10, int)}
      >>> retain = {"label": jnp.zeros(40, int)}
      >>> m = methods.scrub(models.make_apply_fn(model), msteps=1,
      ...                   forget_set=forget, retain_set=retain)
      >>> state = m.init(models.init(model, jax.random.key(0), x),
      ...                steps_per_epoch=8)
      >>> [int(state.extra[k]) for k in
      ...  ("max_phase_steps", "cycle_steps", "cycle_max_steps")]
      [8, 8, 2]
      >>> part = {"image": x, "label": jnp.zeros(2, int), "mask": jnp.ones(2, bool)}
      >>> batch = {"retain": part, "forget": part}
      >>> seen = []
      >>> for _ in range(4):
      ...     state, metrics = m.step(state, batch, jax.random.key(1))
      ...     seen.append(int(metrics["max_step"]))
      >>> seen
      [1, 1, 0, 0]
    """
    _check_callable("apply_fn", apply_fn)
    _check_variant(variant)
    _check_tx(tx)
    original = variant == "original"
    if isinstance(msteps, bool) or not isinstance(msteps, int) or msteps < 0:
        raise ValueError(f"`msteps` must be an int >= 0, got {msteps!r}.")
    if max_steps_per_epoch is not None and (
        isinstance(max_steps_per_epoch, bool)
        or not isinstance(max_steps_per_epoch, int)
        or max_steps_per_epoch < 0
    ):
        raise ValueError(
            "`max_steps_per_epoch` must be an int >= 0 or None, got "
            f"{max_steps_per_epoch!r}."
        )
    n_forget = _set_size("forget_set", forget_set)
    n_retain = _set_size("retain_set", retain_set)
    alpha = check_hparam("alpha", _or(alpha, 0.001 if original else 2.0))
    gamma = check_hparam("gamma", _or(gamma, 0.99 if original else 1.0))
    temperature = check_hparam(
        "temperature", _or(temperature, 4.0 if original else 1.0), low_open=True
    )

    def terms(variables, part, key, hparams, extra):
        """Student forward (train mode) on one batch: (ce, kl, variables)."""
        target = _teacher_logits(apply_fn, extra["teacher"], part)
        logits, variables = apply_fn(
            variables, part["image"], train=True, key=key, mask=part["mask"]
        )
        kl = losses.masked_mean(
            losses.kl_divergence(logits, target, temperature=hparams["temperature"]),
            part["mask"],
        )
        ce = losses.masked_mean(
            losses.cross_entropy(logits, part["label"]), part["mask"]
        )
        return ce, kl, variables

    def loss_fn(variables, batch, key, hparams, extra, step):
        zero = jnp.zeros((), jnp.float32)
        in_max_phase = step < extra["max_phase_steps"]
        is_max = in_max_phase & (step % extra["cycle_steps"] < extra["cycle_max_steps"])

        def max_step(variables):
            ce, kl, variables = terms(variables, batch["forget"], key, hparams, extra)
            loss = -kl if original else -(hparams["gamma"] * ce + hparams["alpha"] * kl)
            loss = hparams["forget_weight"] * loss
            metrics = {"forget_kl": kl, "retain_ce": zero, "retain_kl": zero}
            return loss, (variables, metrics)

        def min_step(variables):
            ce, kl, variables = terms(variables, batch["retain"], key, hparams, extra)
            loss = hparams["gamma"] * ce + hparams["alpha"] * kl
            metrics = {"forget_kl": zero, "retain_ce": ce, "retain_kl": kl}
            return loss, (variables, metrics)

        loss, (variables, metrics) = jax.lax.cond(is_max, max_step, min_step, variables)
        metrics["max_step"] = is_max.astype(jnp.float32)
        return loss, (variables, metrics)

    def init_hook(state, *, steps_per_epoch=None, **context):
        cycle, cycle_max = 2, 1  # fallback: alternate one by one
        if steps_per_epoch is None:
            end = _NO_PHASE_END
        else:
            spe = max(int(steps_per_epoch), 1)
            end = min(msteps * spe, _NO_PHASE_END)
            if max_steps_per_epoch is not None:
                cycle, cycle_max = spe, min(max_steps_per_epoch, spe)
            elif n_forget is not None and n_retain:
                # ceil(n_forget / n_retain * spe), in exact integer arithmetic
                k = -(-n_forget * spe // n_retain)
                cycle, cycle_max = spe, min(k, spe)
        extra = {
            **state.extra,
            "max_phase_steps": jnp.asarray(end, jnp.int32),
            "cycle_steps": jnp.asarray(cycle, jnp.int32),
            "cycle_max_steps": jnp.asarray(cycle_max, jnp.int32),
        }
        return dataclasses.replace(state, extra=extra)

    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    return gradient_method(
        loss_fn,
        tx,
        learning_rate=lr,
        hparams={
            "alpha": alpha,
            "gamma": gamma,
            "temperature": temperature,
            "forget_weight": check_hparam("forget_weight", forget_weight),
        },
        make_extra=lambda v: {"teacher": v},
        init_hook=init_hook,
    )
