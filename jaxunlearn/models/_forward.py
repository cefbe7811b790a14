"""Functional helpers around flax.linen models.

``init``/``forward``/``make_apply_fn`` turn a linen module into the pure
``apply_fn(variables, x, *, train, key) -> (out, new_variables)`` the rest of
the library calls; ``param_groups``/``group_mask`` select parameter groups (the
top-level keys of ``variables["params"]``) so a method can train only some of
them, e.g. with ``optax.masked`` or ``optax.multi_transform``. Nothing here is
jitted; callers jit at the edge.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxunlearn.types import PyTree, Variables


def init(model: nn.Module, key: jax.Array, example_input: ArrayLike) -> dict:
    """Initialises ``model``'s variables.

    Args:
      model: a linen model following the ``jaxunlearn.models`` contract.
      key: PRNG key for the ``"params"`` stream.
      example_input: an input batch ``[N, H, W, C]`` (only its shape and dtype
        matter; a ``jax.ShapeDtypeStruct`` works under ``jax.eval_shape``).

    Returns:
      A plain (unfrozen) dict of collections, always with ``"params"`` and,
      for BatchNorm models, ``"batch_stats"``.
    """
    variables = model.init(key, example_input, train=False)
    variables = dict(flax.core.unfreeze(variables))
    variables.setdefault("params", {})
    return variables


ADAPTERS = "adapters"
"""Top-level key of ``variables["params"]`` holding optional linear adapters.

``{stage: {"kernel": [C, C], "bias": [C]}}`` maps the output of the top-level
stage ``stage`` (e.g. ``"layer2"``) through ``y @ kernel + bias`` on its last
(channel) axis; the entry ``"logits"`` does the same to the model's logits.
:func:`forward` applies them, so a model with adapters (RW-A) is evaluated by
the same ``apply_fn`` as any other; identity kernels and zero biases leave the
model unchanged.
"""


def _adapt(y: jax.Array, adapter) -> jax.Array:
    return y @ adapter["kernel"] + adapter["bias"]


def _split_adapters(variables):
    params = dict(variables["params"])
    adapters = params.pop(ADAPTERS)
    return {**variables, "params": params}, adapters


def stage_widths(model_or_apply_fn, variables: Variables, example_input) -> dict:
    """Channel width of every top-level stage's output (and ``"logits"``).

    Args:
      model_or_apply_fn: a linen model or an ``apply_fn`` from
        :func:`make_apply_fn`.
      variables: the model's variables (adapters, if any, are ignored).
      example_input: an input batch (only its shape and dtype matter).

    Returns:
      ``{stage name: width, ..., "logits": num_classes}``, computed abstractly
      with ``jax.eval_shape``; used to size adapters.
    """
    apply_fn = (
        make_apply_fn(model_or_apply_fn)
        if isinstance(model_or_apply_fn, nn.Module)
        else model_or_apply_fn
    )
    if ADAPTERS in variables.get("params", {}):
        variables = _split_adapters(variables)[0]
    widths = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = getattr(context.module, "path", None)
        if context.method_name == "__call__" and path is not None and len(path) == 1:
            widths[path[0]] = out.shape[-1]
        return out

    def run(v, x):
        with nn.intercept_methods(record):
            return apply_fn(v, x, train=False)[0]

    logits = jax.eval_shape(run, variables, jnp.asarray(example_input))
    widths["logits"] = logits.shape[-1]
    return widths


def _mask_batch_norms(mask: jax.Array):
    """An interceptor passing the batch ``mask`` to every ``nn.BatchNorm``.

    In training mode BatchNorm normalises with (and folds into its running
    averages) the mean and variance of the batch; a padded slot must not enter
    them. Flax's ``BatchNorm`` takes ``mask=`` broadcastable to its input; the
    interceptor reshapes the ``[N]`` mask to ``[N, 1, ..., 1]``.
    """

    def intercept(next_fun, args, kwargs, context):
        if (
            isinstance(context.module, nn.BatchNorm)
            and context.method_name == "__call__"
        ):
            x = args[0]
            m = jnp.reshape(mask, mask.shape + (1,) * (x.ndim - 1))
            kwargs = {**kwargs, "mask": jnp.broadcast_to(m, x.shape)}
        return next_fun(*args, **kwargs)

    return intercept


def _check_mask(mask, x) -> jax.Array:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`mask` must be a boolean array, got dtype {mask.dtype}.")
    if mask.shape != jnp.shape(x)[:1]:
        raise ValueError(
            f"`mask` must have shape [N] = {jnp.shape(x)[:1]} (one flag per "
            f"example of `x`), got {mask.shape}."
        )
    return mask


def forward(
    model: nn.Module,
    variables: Variables,
    x: ArrayLike,
    *,
    train: bool = False,
    key: jax.Array | None = None,
    return_features: bool = False,
    mask: jax.Array | None = None,
) -> tuple[Any, Variables]:
    """Runs ``model`` on ``x``.

    Args:
      model: a linen model following the ``jaxunlearn.models`` contract.
      variables: the model's variables (``{"params": ..., "batch_stats": ...}``).
      x: input batch ``[N, H, W, C]``.
      train: training mode: BatchNorm uses batch statistics and updates its
        running averages, dropout is active.
      key: PRNG key for the ``"dropout"`` stream; used only when ``train`` is
        True. Models with active dropout need it in training mode.
      return_features: return ``(logits, features)`` instead of logits.
      mask: optional boolean ``[N]``: which rows of ``x`` are real examples.
        In training mode every BatchNorm layer computes its batch statistics
        (and the running averages it updates) over the real rows only, so a
        padded slot influences nothing. Per-example layers (GroupNorm, dense,
        conv) need no mask; in eval mode it has no effect.

    Returns:
      ``(out, new_variables)``: ``out`` is logits ``[N, num_classes]`` or
      ``(logits, features)`` with features ``[N, D]``. When ``train`` is True
      and ``variables`` has ``"batch_stats"``, ``new_variables`` equals
      ``variables`` with updated ``"batch_stats"`` (same tree structure,
      shapes and dtypes); otherwise it is ``variables`` itself.
    """
    if mask is not None:
        mask = _check_mask(mask, x)
    if train and mask is not None:
        with nn.intercept_methods(_mask_batch_norms(mask)):
            return forward(
                model,
                variables,
                x,
                train=train,
                key=key,
                return_features=return_features,
            )
    if ADAPTERS in variables.get("params", {}):
        return _forward_adapted(
            model, variables, x, train=train, key=key, return_features=return_features
        )
    rngs = {"dropout": key} if (train and key is not None) else None
    if train and "batch_stats" in variables:
        out, updates = model.apply(
            variables,
            x,
            train=True,
            return_features=return_features,
            rngs=rngs,
            mutable=["batch_stats"],
        )
        old_stats = variables["batch_stats"]
        new_stats = updates.get("batch_stats", old_stats)
        if isinstance(old_stats, flax.core.FrozenDict):
            new_stats = flax.core.freeze(new_stats)
        elif isinstance(new_stats, flax.core.FrozenDict):
            new_stats = flax.core.unfreeze(new_stats)
        if isinstance(variables, flax.core.FrozenDict):
            new_variables = variables.copy({"batch_stats": new_stats})
        else:
            new_variables = {**variables, "batch_stats": new_stats}
        return out, new_variables
    out = model.apply(
        variables, x, train=train, return_features=return_features, rngs=rngs
    )
    return out, variables


def _forward_adapted(model, variables, x, *, train, key, return_features):
    base, adapters = _split_adapters(variables)
    stages = {k: v for k, v in adapters.items() if k != "logits"}

    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = getattr(context.module, "path", None)
        if (
            context.method_name == "__call__"
            and path is not None
            and len(path) == 1
            and path[0] in stages
        ):
            out = _adapt(out, stages[path[0]])
        return out

    with nn.intercept_methods(intercept):
        out, new_base = forward(
            model, base, x, train=train, key=key, return_features=return_features
        )
    if "logits" in adapters:
        if return_features:
            out = (_adapt(out[0], adapters["logits"]), out[1])
        else:
            out = _adapt(out, adapters["logits"])
    new_params = {**new_base["params"], ADAPTERS: adapters}
    return out, {**new_base, "params": new_params}


@dataclasses.dataclass(frozen=True)
class _BoundForward:
    """``forward`` bound to a model; hashable, equal for equal models."""

    model: nn.Module

    def __call__(
        self,
        variables: Variables,
        x: ArrayLike,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        return_features: bool = False,
        mask: jax.Array | None = None,
    ) -> tuple[Any, Variables]:
        return forward(
            self.model,
            variables,
            x,
            train=train,
            key=key,
            return_features=return_features,
            mask=mask,
        )


def make_apply_fn(model: nn.Module):
    """Binds :func:`forward` to ``model``.

    Args:
      model: a linen model following the ``jaxunlearn.models`` contract.

    Returns:
      ``apply_fn(variables, x, *, train=False, key=None,
      return_features=False, mask=None) -> (out, new_variables)``, equal to
      ``forward(model, ...)``. The returned callable is hashable and compares
      equal for equal models, so it can be a static argument of ``jax.jit``.
    """
    return _BoundForward(model)


def _check_params(params: Any) -> None:
    if not isinstance(params, Mapping):
        raise ValueError(
            f"`params` must be a mapping of group name -> subtree, got "
            f"{type(params).__name__}."
        )


def param_groups(params: PyTree) -> tuple[str, ...]:
    """Names of the parameter groups of ``params``.

    Args:
      params: ``variables["params"]`` of a ``jaxunlearn.models`` model.

    Returns:
      The sorted top-level keys, e.g. ``("block1", "block2", "head")``.
    """
    _check_params(params)
    return tuple(sorted(params.keys()))


def group_mask(params: PyTree, trainable: str | Sequence[str]) -> PyTree:
    """Boolean mask selecting the parameter groups named in ``trainable``.

    Args:
      params: ``variables["params"]`` of a ``jaxunlearn.models`` model.
      trainable: a group name or a sequence of group names.

    Returns:
      A pytree with the structure of ``params`` whose leaves are True inside
      the named groups and False elsewhere (usable as an ``optax.masked``
      mask).

    Raises:
      ValueError: if a name in ``trainable`` is not a group of ``params``.
    """
    groups = param_groups(params)
    if isinstance(trainable, str):
        trainable = (trainable,)
    elif not isinstance(trainable, Sequence) or not all(
        isinstance(t, str) for t in trainable
    ):
        raise ValueError(
            f"`trainable` must be a group name or a sequence of group names, "
            f"got {trainable!r}."
        )
    unknown = [t for t in trainable if t not in groups]
    if unknown:
        raise ValueError(
            f"`trainable` names unknown parameter groups {unknown}; available "
            f"groups: {groups}."
        )
    selected = frozenset(trainable)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: path[0].key in selected, params
    )
