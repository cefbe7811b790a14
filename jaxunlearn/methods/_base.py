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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

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
    """

    init: Callable[..., UnlearnState]
    step: Callable[[UnlearnState, Batch, jax.Array], tuple[UnlearnState, Metrics]]
    driver: str = "retain"


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
    ``retain_set``) are
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


def default_tx(
    tx: optax.GradientTransformation | None,
    *,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
) -> optax.GradientTransformation:
    """``tx`` if given, else SGD with coupled weight decay."""
    if tx is not None:
        return tx
    return optim.sgd(learning_rate, momentum=momentum, weight_decay=weight_decay)


def freeze_except(
    tx: optax.GradientTransformation,
    trainable: str | Sequence[str] | Callable[[PyTree], Sequence[str]] | None,
) -> optax.GradientTransformation:
    """Restricts ``tx`` to the parameter groups named in ``trainable``.

    ``trainable`` is a group name, a sequence of names, or a function of the
    parameters returning names (resolved when the optimiser state is built).
    Frozen groups get exactly zero updates (no weight decay either).
    """
    if trainable is None:
        return tx
    from jaxunlearn import models  # local: methods must not need models at import

    def labels(params):
        groups = trainable(params) if callable(trainable) else trainable
        mask = models.group_mask(params, groups)
        return jax.tree.map(lambda m: "train" if m else "freeze", mask)

    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


LossFn = Callable[
    [PyTree, Batch, jax.Array, Mapping[str, jax.Array], PyTree],
    tuple[jax.Array, tuple[PyTree, Metrics]],
]
"""``loss_fn(variables, batch, key, hparams, extra) -> (loss, (variables, metrics))``.

The returned variables carry updated non-parameter collections (BatchNorm).
"""


def gradient_method(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    driver: str = "retain",
    hparams: Mapping[str, float] | None = None,
    reinit: Callable[[jax.Array], PyTree] | None = None,
    make_extra: Callable[[PyTree], PyTree] | None = None,
    prepare: Callable[[PyTree], PyTree] | None = None,
) -> Method:
    """Builds a ``Method`` that takes one optimiser step on ``loss_fn`` per batch.

    Args:
      loss_fn: scalar objective, see :data:`LossFn`; differentiated w.r.t.
        ``variables["params"]``.
      tx: optax transformation applied to the parameter gradients.
      driver: which set defines an epoch (``"retain"`` or ``"forget"``).
      hparams: default sweepable scalars; ``init(..., hparams={...})`` overrides.
      reinit: if given, ``init`` ignores the incoming variables and starts from
        ``reinit(key)`` (used by ``retrain``).
      make_extra: builds ``state.extra`` from the incoming variables.
      prepare: maps the incoming variables to the ones trained (e.g. adds
        adapters); applied after ``make_extra``.
    """
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}.")
    defaults = dict(hparams or {})

    def init(variables, *, key=None, hparams=None, **context) -> UnlearnState:
        del context
        if reinit is not None:
            if key is None:
                raise ValueError("this method re-initialises: pass key=.")
            variables = reinit(key)
        if "params" not in variables:
            raise ValueError("variables must contain a 'params' collection.")
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
        return UnlearnState(
            step=jnp.zeros((), jnp.int32),
            variables=variables,
            opt_state=tx.init(variables["params"]),
            hparams={k: jnp.asarray(v, jnp.float32) for k, v in hp.items()},
            extra=extra,
        )

    def step(state: UnlearnState, batch: Batch, key: jax.Array):
        key = jax.random.fold_in(key, state.step)
        params = state.variables["params"]

        def objective(p):
            variables = {**state.variables, "params": p}
            return loss_fn(variables, batch, key, state.hparams, state.extra)

        (loss, (new_vars, metrics)), grads = jax.value_and_grad(
            objective, has_aux=True
        )(params)
        updates, opt_state = tx.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        variables = {**new_vars, "params": params}
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        new_state = dataclasses.replace(
            state, step=state.step + 1, variables=variables, opt_state=opt_state
        )
        return new_state, metrics

    return Method(init=init, step=step, driver=driver)
