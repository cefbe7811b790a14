"""The method contract: ``Method(init, step)``, ``UnlearnState`` and the registry.

A method is a factory whose keyword arguments are its static configuration and
which returns a pair of pure functions::

    method = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05)
    state = method.init(variables, key=key)
    state, metrics = method.step(state, batch, key)

``step`` is type-stable, so it runs under ``jax.jit``, ``lax.scan`` and
``jax.vmap``. Sweepable scalars live in ``state.hparams`` (float32 arrays).
"""

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxunlearn import optim
from jaxunlearn.types import Batch, Metrics, PyTree

DRIVERS = ("retain", "forget")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UnlearnState:
    """State carried by a method between steps (a pytree).

    Attributes:
      step: int32 scalar, number of steps taken.
      variables: Flax variables being unlearned (``params``, ``batch_stats``...).
      opt_state: optax state of the parameters.
      hparams: ``{name: float32 scalar}``, sweepable with ``jax.vmap``.
      extra: method-specific pytree (frozen teacher, masks, ...).
    """

    step: jax.Array
    variables: PyTree
    opt_state: PyTree
    hparams: dict[str, jax.Array]
    extra: PyTree


class Method(NamedTuple):
    """A pair of pure functions plus which set defines an epoch.

    Attributes:
      init: ``init(variables, *, key, **context) -> UnlearnState``.
      step: ``step(state, batch, key) -> (state, metrics)``.
      driver: ``"retain"`` or ``"forget"``: an epoch is one pass over this set;
        the other set is cycled to the same number of steps.
      spec: for a gradient method, the :class:`GradientSpec` it was built
        from (its objective is reachable for wrappers); None otherwise.
    """

    init: Callable[..., UnlearnState]
    step: Callable[[UnlearnState, Batch, jax.Array], tuple[UnlearnState, Metrics]]
    driver: str = "retain"
    spec: Any = None


_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Decorator adding a method factory to the registry under ``name``."""

    def deco(factory: Callable[..., Method]) -> Callable[..., Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered.")
        _REGISTRY[name] = factory
        return factory

    return deco


def names() -> tuple[str, ...]:
    """Registered method names, sorted."""
    return tuple(sorted(_REGISTRY))


CONTEXT_KWARGS = (
    "apply_fn",
    "num_classes",
    "init_fn",
    "forget_classes",
    "example_input",
    "forget_set",
    "retain_set",
    "val_set",
    "unseen_set",
)
"""Keyword arguments a caller may always pass to :func:`get`; a factory that
does not take one simply does not receive it. Any other unknown keyword is an
error, so a misspelt hyperparameter never goes unnoticed."""


def needs_forget_classes(name: str) -> bool:
    """Whether the method is a class-unlearning method (takes ``forget_classes``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid names: {names()}.")
    return "forget_classes" in inspect.signature(_REGISTRY[name]).parameters


def get(name: str, **kwargs: Any) -> Method:
    """Builds a registered method by name.

    The context keywords :data:`CONTEXT_KWARGS` (``apply_fn``, ``num_classes``,
    ``init_fn``, ``forget_classes``, ``example_input``, ``forget_set``,
    ``retain_set``, ``val_set``, ``unseen_set``) are
    passed only to factories that take them; every other keyword must be a
    parameter of the factory.

    Examples:
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 10, hidden=(8,))
      >>> m = methods.get("finetune", apply_fn=models.make_apply_fn(model))
      >>> m.driver
      'retain'
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid names: {names()}.")
    factory = _REGISTRY[name]
    params = inspect.signature(factory).parameters
    takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        kwargs = {
            k: v for k, v in kwargs.items() if k in params or k not in CONTEXT_KWARGS
        }
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = sorted(k for k in params if k not in CONTEXT_KWARGS)
            raise TypeError(
                f"method {name!r} got unknown arguments {unknown}; valid: {valid}."
            )
    return factory(**kwargs)


def _check_scalar(
    name: str,
    value: Any,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Validates a hyperparameter on the host, before anything compiles."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number, got {value!r} of type "
            f"{type(value).__name__}."
        )
    v = float(value)
    bad = not math.isfinite(v) or (v <= low if low_open else v < low)
    if high is not None and v > high:
        bad = True
    if bad:
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and <= {high}"
        raise ValueError(f"`{name}` must be finite and {bound}, got {value!r}.")
    return v


def check_hparam(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Public form of the host-side check every factory runs on its scalars.

    Raises ``TypeError`` for a non-number (a string, a bool) and ``ValueError``
    for NaN / inf or a value outside ``[low, high]`` (``(low, high]`` when
    ``low_open``), naming the argument.

    Examples:
      >>> check_hparam("retain_weight", 0.5, high=1.0)
      0.5
    """
    return _check_scalar(name, value, low=low, high=high, low_open=low_open)


def check_int(name: str, value: Any, *, low: int = 0) -> int:
    """Host-side check of an integer argument, naming it.

    Raises ``TypeError`` for a non-integer (a bool, a float) and
    ``ValueError`` below ``low``.

    Examples:
      >>> check_int("perturb_steps", 15, low=1)
      15
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an int, got {value!r} of type {type(value).__name__}."
        )
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value!r}.")
    return int(value)


def sgd_tx(
    tx: optax.GradientTransformation | None,
    *,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
) -> tuple[optax.GradientTransformation, float | None]:
    """The optimiser of a factory and its sweepable learning rate.

    Returns ``(tx, None)`` when the caller passed ``tx`` (its own learning
    rate and schedule apply), else ``(unit-rate SGD, learning_rate)``: SGD
    with momentum and coupled weight decay at rate 1, which
    :func:`gradient_method` scales by ``state.hparams["learning_rate"]``.
    PyTorch's SGD applies the rate after the momentum buffer, so the two are
    the same optimiser, and the rate can be swept with ``jax.vmap`` like any
    other hyperparameter.
    """
    if tx is not None:
        return tx, None
    learning_rate = _check_scalar(
        "learning_rate", learning_rate, low=0.0, low_open=True
    )
    momentum = _check_scalar("momentum", momentum, low=0.0, high=1.0)
    weight_decay = _check_scalar("weight_decay", weight_decay, low=0.0)
    return optim.sgd(1.0, momentum=momentum, weight_decay=weight_decay), learning_rate


def default_tx(
    tx: optax.GradientTransformation | None,
    *,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
) -> optax.GradientTransformation:
    """``tx`` if given, else SGD with coupled weight decay (fixed rate).

    Prefer :func:`sgd_tx`, whose learning rate is sweepable.
    """
    if tx is not None:
        return tx
    learning_rate = _check_scalar(
        "learning_rate", learning_rate, low=0.0, low_open=True
    )
    momentum = _check_scalar("momentum", momentum, low=0.0, high=1.0)
    weight_decay = _check_scalar("weight_decay", weight_decay, low=0.0)
    return optim.sgd(learning_rate, momentum=momentum, weight_decay=weight_decay)


Trainable = str | Sequence[str] | Callable[[PyTree], Sequence[str]] | None


def _trainable_groups(trainable: Trainable, params) -> tuple[str, ...]:
    from jaxunlearn import models  # noqa: PLC0415  (models sits beside methods)

    groups = trainable(params) if callable(trainable) else trainable
    if isinstance(groups, str):
        groups = (groups,)
    models.group_mask(params, groups)  # validates the names
    return tuple(groups)


def freeze_except(
    tx: optax.GradientTransformation,
    trainable: Trainable,
) -> optax.GradientTransformation:
    """Restricts ``tx`` to the parameter groups named in ``trainable``.

    ``trainable`` is a group name, a sequence of names, or a function of the
    parameters returning names (resolved when the optimiser state is built).
    Frozen groups get exactly zero updates (no weight decay either).
    """
    if trainable is None:
        return tx
    from jaxunlearn import models  # noqa: PLC0415

    def labels(params):
        mask = models.group_mask(params, _trainable_groups(trainable, params))
        return jax.tree.map(lambda m: "train" if m else "freeze", mask)

    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def _frozen_norms_in_eval_mode(frozen: frozenset):
    """An interceptor running every BatchNorm inside a frozen group in eval
    mode (its running averages normalise, and nothing updates them), whatever
    mode the trainable groups run in. Dropout is not affected."""

    def intercept(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, nn.BatchNorm):
            path = getattr(mod, "path", ()) or ()
            if path and path[0] in frozen:
                kwargs = {**kwargs, "use_running_average": True}
        return next_fun(*args, **kwargs)

    return intercept


Objective = Callable[
    [PyTree, Batch, jax.Array, Mapping[str, jax.Array], PyTree, jax.Array],
    tuple[jax.Array, tuple[PyTree, Metrics]],
]
"""``objective(variables, batch, key, hparams, extra, step)``
``-> (loss, (variables, metrics))``.

``step`` is the int32 step counter (schedules such as l1 decay or DLFD's
weight ramp read it). The returned variables carry updated non-parameter
collections (BatchNorm); the loss is differentiated w.r.t.
``variables["params"]``.
"""

LossFn = Objective  # the name used before objectives saw the step counter


@dataclasses.dataclass(frozen=True)
class GradientSpec:
    """Everything :func:`gradient_method` was built from.

    ``Method.spec`` of a gradient method, so a wrapper can rebuild it around
    another objective: ``gradient_method(**{**dataclasses.asdict-like fields,
    "objective": wrapped})`` -- see :func:`with_objective`.
    """

    objective: Objective
    tx: optax.GradientTransformation
    driver: str = "retain"
    hparams: Mapping[str, float] | None = None
    learning_rate: float | None = None
    trainable: Trainable = None
    update_mask: Callable[[UnlearnState], PyTree] | None = None
    mask_updates: bool = True
    reinit: Callable[[jax.Array], PyTree] | None = None
    make_extra: Callable[[PyTree], PyTree] | None = None
    prepare: Callable[[PyTree], PyTree] | None = None
    init_hook: Callable[..., UnlearnState] | None = None


def objective_of(method: Method) -> Objective:
    """The objective of a gradient method (``Method.spec.objective``).

    Raises:
      ValueError: ``method`` was not built by :func:`gradient_method` (e.g.
        the gradient-free ``svd``).
    """
    if getattr(method, "spec", None) is None:
        raise ValueError("`method` is not a gradient method: it has no objective.")
    return method.spec.objective


def with_objective(
    method: Method,
    objective: Objective,
    *,
    hparams: Mapping[str, float] | None = None,
    driver: str | None = None,
) -> Method:
    """Rebuilds the gradient method ``method`` around a new ``objective``.

    The optimiser, frozen groups, update mask, extras and hyperparameters are
    kept; ``hparams`` adds (or overrides) sweepable scalars the new objective
    reads. This is how a wrapper (e.g. an accelerated-unlearning regulariser)
    composes with any registered gradient method.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> ft = methods.get("finetune", apply_fn=models.make_apply_fn(model))
      >>> base = methods.objective_of(ft)
      >>> def doubled(v, b, k, h, e, t):
      ...     loss, aux = base(v, b, k, h, e, t)
      ...     return h["scale"] * loss, aux
      >>> m = methods.with_objective(ft, doubled, hparams={"scale": 2.0})
      >>> v = models.init(model, jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
      >>> sorted(m.init(v).hparams)
      ['learning_rate', 'scale']
    """
    spec = getattr(method, "spec", None)
    if spec is None:
        raise ValueError("`method` is not a gradient method: it has no objective.")
    merged = {**(spec.hparams or {}), **(hparams or {})}
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    if spec.learning_rate is not None and "learning_rate" in merged:
        fields["learning_rate"] = merged.pop("learning_rate")
    fields.update(objective=objective, hparams=merged)
    if driver is not None:
        fields["driver"] = driver
    return gradient_method(**fields)


def gradient_method(
    objective: Objective,
    tx: optax.GradientTransformation,
    *,
    driver: str = "retain",
    hparams: Mapping[str, float] | None = None,
    learning_rate: float | None = None,
    trainable: Trainable = None,
    update_mask: Callable[[UnlearnState], PyTree] | None = None,
    mask_updates: bool = True,
    reinit: Callable[[jax.Array], PyTree] | None = None,
    make_extra: Callable[[PyTree], PyTree] | None = None,
    prepare: Callable[[PyTree], PyTree] | None = None,
    init_hook: Callable[..., UnlearnState] | None = None,
) -> Method:
    """Builds a ``Method`` that takes one optimiser step on ``objective`` per batch.

    Args:
      objective: scalar objective, see :data:`Objective`; differentiated
        w.r.t. ``variables["params"]``.
      tx: optax transformation applied to the parameter gradients.
      driver: which set defines an epoch (``"retain"`` or ``"forget"``).
      hparams: default sweepable scalars; ``init(..., hparams={...})`` overrides.
      learning_rate: when given, ``tx`` runs at unit rate (see :func:`sgd_tx`)
        and the updates are scaled by the sweepable
        ``state.hparams["learning_rate"]`` (default this value).
      trainable: parameter groups that train (names, or a function of the
        params returning names); the others are frozen whole: exactly zero
        updates, and their BatchNorm layers run in eval mode (running
        averages normalise and are never updated).
      update_mask: hook ``update_mask(state) -> pytree`` of multipliers applied
        to the gradients and (with ``mask_updates``, default) to the final
        updates too, so masked weights never move, not even by weight decay
        (SalUn's text); ``mask_updates=False`` masks the gradients only, so
        coupled weight decay still shrinks masked weights (SalUn's code).
      reinit: if given, ``init`` ignores the incoming variables and starts from
        ``reinit(key)`` (used by ``retrain``).
      make_extra: builds ``state.extra`` from the incoming variables.
      prepare: maps the incoming variables to the ones trained (e.g. adds
        adapters); applied after ``make_extra``.
      init_hook: ``init_hook(state, **context) -> state`` run at the end of
        ``init`` with the caller's context (e.g. ``num_steps``, the length of
        the run, for schedules).

    A step whose driver batch holds no real example (the trailing batches of
    a subset smaller than the plan) leaves the state unchanged: no momentum,
    no weight decay, no BatchNorm update, no step count.
    """
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}.")
    defaults = dict(hparams or {})
    if learning_rate is not None:
        defaults["learning_rate"] = _check_scalar(
            "learning_rate", learning_rate, low=0.0, low_open=True
        )
    spec = GradientSpec(
        objective=objective,
        tx=tx,
        driver=driver,
        hparams=dict(hparams or {}),
        learning_rate=learning_rate,
        trainable=trainable,
        update_mask=update_mask,
        mask_updates=mask_updates,
        reinit=reinit,
        make_extra=make_extra,
        prepare=prepare,
        init_hook=init_hook,
    )
    full_tx = freeze_except(tx, trainable)

    def init(variables, *, key=None, hparams=None, **context) -> UnlearnState:
        if reinit is not None:
            if key is None:
                raise ValueError("this method re-initialises: pass key=.")
            variables = reinit(key)
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError("`variables` must contain a 'params' collection.")
        variables = dict(variables)
        extra = make_extra(variables) if make_extra is not None else {}
        if prepare is not None:
            variables = dict(prepare(variables))
        unknown = set(hparams or {}) - set(defaults)
        if unknown:
            raise ValueError(
                f"unknown hparams {sorted(unknown)}; valid: {sorted(defaults)}."
            )
        hp = {**defaults, **(hparams or {})}
        state = UnlearnState(
            step=jnp.zeros((), jnp.int32),
            variables=variables,
            opt_state=full_tx.init(variables["params"]),
            hparams={k: jnp.asarray(v, jnp.float32) for k, v in hp.items()},
            extra=extra,
        )
        if init_hook is not None:
            state = init_hook(state, **context)
        return state

    def step(state: UnlearnState, batch: Batch, key: jax.Array):
        key = jax.random.fold_in(key, state.step)
        params = state.variables["params"]

        def loss_of(p):
            variables = {**state.variables, "params": p}
            return objective(
                variables, batch, key, state.hparams, state.extra, state.step
            )

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        if trainable is not None:
            frozen = frozenset(params) - set(_trainable_groups(trainable, params))
            with nn.intercept_methods(_frozen_norms_in_eval_mode(frozen)):
                (loss, (new_vars, metrics)), grads = grad_fn(params)
        else:
            (loss, (new_vars, metrics)), grads = grad_fn(params)
        mask = update_mask(state) if update_mask is not None else None
        if mask is not None:
            grads = jax.tree.map(jnp.multiply, grads, mask)
        updates, opt_state = full_tx.update(grads, state.opt_state, params)
        if learning_rate is not None:
            lr = state.hparams["learning_rate"]
            updates = jax.tree.map(lambda u: (u * lr).astype(u.dtype), updates)
        if mask is not None and mask_updates:
            updates = jax.tree.map(jnp.multiply, updates, mask)
        new_params = optax.apply_updates(params, updates)
        variables = {**new_vars, "params": new_params}
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        new_state = dataclasses.replace(
            state, step=state.step + 1, variables=variables, opt_state=opt_state
        )
        part = batch.get(driver) if isinstance(batch, Mapping) else None
        if part is not None and "mask" in part:
            real = jnp.any(part["mask"])
            new_state = jax.tree.map(
                lambda a, b: jnp.where(real, a, b), new_state, state
            )
            metrics = jax.tree.map(
                lambda m: jnp.where(real, m, jnp.zeros_like(m)), metrics
            )
        return new_state, metrics

    return Method(init=init, step=step, driver=driver, spec=spec)
