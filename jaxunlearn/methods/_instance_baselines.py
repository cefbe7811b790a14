"""Layer-wise and noise baselines: CF-k, EU-k (Goel et al.) and UNSIR.

``cf_k`` fine-tunes only the last ``k`` top-level stages on the retain set;
``eu_k`` first re-initialises them (exact unlearning of the last ``k``
layers); ``unsir`` learns error-maximising noise for the forget labels, then
impairs the model with it and repairs on the retain set.

A "stage" is a top-level parameter group (``variables["params"]`` key) and
the head counts as one. Their forward order is taken from the model itself:
on the first ``init`` the model runs abstractly (``jax.eval_shape``) on
``example_input`` under an interceptor that records the top-level modules in
call order. Sorted names are not the forward order (``head`` sorts before
``stem`` in a ResNet, ``block10`` before ``block2``), and the insertion order
of ``variables["params"]`` does not survive ``jax.jit`` or ``jax.tree.map``
(both rebuild dicts with sorted keys), so neither is used.
"""

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import losses, models
from jaxunlearn.methods._base import (
    Method,
    UnlearnState,
    check_hparam,
    check_int,
    gradient_method,
    register,
    sgd_tx,
)
from jaxunlearn.methods._common import batch_ce
from jaxunlearn.types import ApplyFn, PyTree


def _check_callable(name: str, value) -> None:
    if not callable(value):
        raise TypeError(f"`{name}` must be callable, got {type(value).__name__}.")


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be a bool, got {value!r}.")
    return bool(value)


def _check_tx(tx) -> None:
    if tx is not None and not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(
            f"`tx` must be an optax.GradientTransformation or None, got "
            f"{type(tx).__name__}."
        )


def _check_example_input(example_input, method: str):
    if example_input is None:
        raise ValueError(
            f"{method} needs `example_input` (an input batch, e.g. "
            "split.retain['image'][:1]) to find the forward order of the stages."
        )
    shape = getattr(example_input, "shape", None)
    if shape is None:
        example_input = np.asarray(example_input)
        shape = example_input.shape
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(
            f"`example_input` must be a non-empty batch [N, ...], got shape {shape}."
        )
    return example_input


def stage_order(apply_fn: ApplyFn, variables, example_input) -> tuple[str, ...]:
    """Top-level parameter groups of a model in the order the forward pass calls them.

    Runs ``apply_fn`` abstractly (``jax.eval_shape``, nothing is computed; the
    variables may be tracers, e.g. under ``jax.vmap``) in eval mode on
    ``example_input`` and records each top-level module at its first call.
    Adapter parameters (``models.ADAPTERS``) are not a stage.

    Raises:
      ValueError: a parameter group is never called as a top-level module.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import models
      >>> model = models.get_model("resnet18", 10, width=4)
      >>> x = jnp.zeros((1, 8, 8, 1))
      >>> v = models.init(model, jax.random.key(0), x)
      >>> stage_order(models.make_apply_fn(model), v, x)
      ('stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head')
    """
    params = dict(variables["params"])
    params.pop(models.ADAPTERS, None)
    groups = set(params)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
        {**variables, "params": params},
    )
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        path = getattr(context.module, "path", None)
        if (
            context.method_name == "__call__"
            and path
            and len(path) == 1
            and path[0] in groups
            and path[0] not in order
        ):
            order.append(path[0])
        return next_fun(*args, **kwargs)

    def run(v, x):
        with nn.intercept_methods(record):
            return apply_fn(v, x, train=False)[0]

    x = jax.ShapeDtypeStruct(jnp.shape(example_input), jnp.result_type(example_input))
    jax.eval_shape(run, abstract, x)
    missing = sorted(groups - set(order))
    if missing:
        raise ValueError(
            f"parameter groups {missing} are not called as top-level modules by "
            "the model, so their place in the forward order is unknown."
        )
    return tuple(order)


class _LastStages:
    """The last ``k`` stages, resolved (host side) from the first variables
    seen and cached by the set of group names; ``trainable`` for
    :func:`gradient_method`."""

    def __init__(self, apply_fn, example_input, k: int, method: str):
        self.apply_fn = apply_fn
        self.example_input = example_input
        self.k = k
        self.method = method
        self._cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def resolve(self, variables) -> tuple[str, ...]:
        key = tuple(sorted(variables["params"]))
        if key not in self._cache:
            order = stage_order(self.apply_fn, variables, self.example_input)
            if self.k > len(order):
                raise ValueError(
                    f"`k` = {self.k} exceeds the number of stages of the model "
                    f"({len(order)}: {order})."
                )
            self._cache[key] = order[-self.k :]
        return self._cache[key]

    def __call__(self, params) -> tuple[str, ...]:
        key = tuple(sorted(params))
        if key not in self._cache:
            raise RuntimeError(
                f"{self.method}: the stages are resolved by `init`; call "
                "method.init(variables, ...) before stepping."
            )
        return self._cache[key]


def _retain_ce(apply_fn):
    def loss_fn(variables, batch, key, hparams, extra, step):
        loss, variables, acc = batch_ce(apply_fn, variables, batch["retain"], key)
        return loss, (variables, {"retain_ce": loss, "retain_acc": acc})

    return loss_fn


def _layerwise(apply_fn, k, example_input, tx, lr, momentum, wd, method, **kw):
    _check_callable("apply_fn", apply_fn)
    k = check_int("k", k, low=1)
    example_input = _check_example_input(example_input, method)
    _check_tx(tx)
    stages = _LastStages(apply_fn, example_input, k, method)
    tx, lr = sgd_tx(tx, learning_rate=lr, momentum=momentum, weight_decay=wd)

    def make_extra(variables):
        stages.resolve(variables)  # before the optimiser state is built
        return {}

    base = gradient_method(
        _retain_ce(apply_fn),
        tx,
        learning_rate=lr,
        trainable=stages,
        make_extra=make_extra,
        **kw,
    )
    return base, stages


@register("cf_k")
def cf_k(
    apply_fn: ApplyFn,
    *,
    k: int = 1,
    example_input=None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> Method:
    """CF-k: catastrophically forget by fine-tuning only the last ``k`` stages.

    The last ``k`` top-level stages in forward order (the head is the last)
    train on the retain cross-entropy; every other stage is frozen whole:
    exactly zero updates, and its BatchNorm layers run in eval mode, so their
    running statistics never change. The forget set is never looked at.

    Args:
      apply_fn: model apply function (``models.make_apply_fn``).
      k: number of trailing stages that train (1 = head only); an int in
        ``[1, number of stages]`` (the upper bound is checked by ``init``).
      example_input: an input batch (only shape and dtype matter) used once to
        find the stages' forward order. Required.
      tx: optimiser; default SGD with ``momentum`` and ``weight_decay`` at the
        sweepable ``learning_rate``.

    References:
      Goel et al., "Towards Adversarial Evaluations for Inexact Machine
      Unlearning" (arXiv 2201.06640, 2022).

    Examples:
      >>> import jax
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4, 4))
      >>> x = jax.numpy.zeros((2, 2, 2, 1))
      >>> v = models.init(model, jax.random.key(0), x)
      >>> m = methods.cf_k(models.make_apply_fn(model), k=2, example_input=x)
      >>> int(m.init(v).step)
      0
      >>> m.spec.trainable(v["params"])
      ('block2', 'head')
    """
    base, _ = _layerwise(
        apply_fn, k, example_input, tx, learning_rate, momentum, weight_decay, "cf_k"
    )
    return base


def _swap_stages(variables, fresh, names) -> dict:
    """``variables`` with the subtrees of stages ``names`` of every collection
    taken from ``fresh`` (shapes must agree)."""
    if not isinstance(fresh, Mapping) or "params" not in fresh:
        raise ValueError("`init_fn(key)` must return variables with 'params'.")
    out = dict(variables)
    for col, tree in variables.items():
        if not isinstance(tree, Mapping):
            continue
        new = dict(tree)
        for name in names:
            if name not in tree:
                continue
            if name not in fresh.get(col, {}):
                raise ValueError(
                    f"`init_fn(key)` has no {col!r} entry for stage {name!r}."
                )
            old_s = jax.tree.map(jnp.shape, tree[name])
            new_s = jax.tree.map(jnp.shape, fresh[col][name])
            if old_s != new_s:
                raise ValueError(
                    f"`init_fn(key)` draws stage {name!r} ({col}) with shapes "
                    f"{new_s}, the variables have {old_s}."
                )
            new[name] = jax.tree.map(
                lambda f, o: jnp.asarray(f, jnp.result_type(o)),
                fresh[col][name],
                tree[name],
            )
        out[col] = new
    return out


@register("eu_k")
def eu_k(
    apply_fn: ApplyFn,
    *,
    init_fn: Callable[[jax.Array], PyTree] | None = None,
    k: int = 1,
    example_input=None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    reinit: bool = True,
) -> Method:
    """EU-k: exact unlearning of the last ``k`` stages (re-initialise, retrain).

    ``init(variables, key=key)`` replaces the parameters and every other
    collection (BatchNorm statistics) of the last ``k`` top-level stages in
    forward order with the draw ``init_fn(key)``; they then train on the
    retain cross-entropy while the other stages stay frozen whole (zero
    updates, BatchNorm in eval mode). With ``reinit=False`` nothing is
    re-initialised: the last ``k`` stages are merely fine-tuned, the variant
    the DLFD reference code runs (then this equals :func:`cf_k` with weight
    decay).

    The re-initialisation lives in this method's ``init`` wrapper, not in its
    :class:`GradientSpec`: rebuilding it with ``methods.with_objective`` keeps
    the frozen stages but drops the re-initialisation.

    Args:
      apply_fn: model apply function.
      init_fn: ``init_fn(key) -> variables`` (fresh draw of the whole model);
        required when ``reinit``.
      k: number of trailing stages re-initialised and trained (the head is
        the last stage); an int in ``[1, number of stages]``.
      example_input: an input batch used once to find the stages' forward
        order. Required.
      tx: optimiser; default SGD with ``momentum`` and ``weight_decay`` at the
        sweepable ``learning_rate``.
      reinit: re-initialise the trained stages (the paper's EU-k).

    References:
      Goel et al., "Towards Adversarial Evaluations for Inexact Machine
      Unlearning" (arXiv 2201.06640, 2022).

    Examples:
      >>> import jax
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> x = jax.numpy.zeros((2, 2, 2, 1))
      >>> init_fn = lambda k: models.init(model, k, x)
      >>> v = init_fn(jax.random.key(0))
      >>> m = methods.eu_k(models.make_apply_fn(model), init_fn=init_fn,
      ...                  example_input=x)
      >>> s = m.init(v, key=jax.random.key(1))
      >>> bool((s.variables["params"]["head"]["kernel"]
      ...       == init_fn(jax.random.key(1))["params"]["head"]["kernel"]).all())
      True
    """
    reinit = _check_bool("reinit", reinit)
    if reinit:
        if init_fn is None:
            raise ValueError(
                "eu_k with reinit=True needs `init_fn` (key -> variables)."
            )
        _check_callable("init_fn", init_fn)
    base, stages = _layerwise(
        apply_fn, k, example_input, tx, learning_rate, momentum, weight_decay, "eu_k"
    )
    if not reinit:
        return base

    def init(variables, *, key=None, hparams=None, **context) -> UnlearnState:
        if key is None:
            raise ValueError("eu_k re-initialises the last k stages: pass key=.")
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError("`variables` must contain a 'params' collection.")
        names = stages.resolve(variables)
        variables = _swap_stages(dict(variables), init_fn(key), names)
        return base.init(variables, key=key, hparams=hparams, **context)

    return Method(init=init, step=base.step, driver=base.driver, spec=base.spec)


def _noise_objective(apply_fn, variables, labels, l2):
    def loss(noise):
        logits, _ = apply_fn(variables, noise, train=False)
        ce = jnp.mean(losses.cross_entropy(logits, labels))
        reg = jnp.mean(jnp.sum(jnp.square(noise), axis=tuple(range(1, noise.ndim))))
        return -ce + l2 * reg

    return loss


def error_maximising_noise(
    apply_fn: ApplyFn,
    variables,
    labels: jax.Array,
    noise0: jax.Array,
    *,
    steps: int = 8,
    learning_rate: float = 0.1,
    l2: float = 0.1,
) -> jax.Array:
    """UNSIR's error-maximising noise for ``labels``, from ``noise0``.

    Minimises ``-CE(model(noise), labels) + l2 * mean_b sum noise_b^2`` with
    Adam (``learning_rate``) for ``steps`` steps, the model in eval mode
    (BatchNorm normalises with, and keeps, its running averages). Pure and
    traceable (a ``lax.fori_loop``).
    """
    loss = _noise_objective(apply_fn, variables, labels, l2)
    opt = optax.adam(learning_rate)

    def body(_, carry):
        noise, opt_state = carry
        g = jax.grad(loss)(noise)
        updates, opt_state = opt.update(g, opt_state, noise)
        return optax.apply_updates(noise, updates), opt_state

    noise, _ = jax.lax.fori_loop(0, steps, body, (noise0, opt.init(noise0)))
    return noise


def _impair_steps(impair_steps: int | None, fraction: float, context: Mapping) -> int:
    if impair_steps is not None:
        return impair_steps
    num_steps = context.get("num_steps")
    if num_steps is not None:
        return int(round(fraction * int(num_steps)))
    per_epoch = context.get("steps_per_epoch")
    if per_epoch is not None:
        return int(per_epoch)
    raise ValueError(
        "unsir needs the length of the run to place the impair phase: pass "
        "num_steps= (or steps_per_epoch=) to init, or impair_steps= to unsir."
    )


@register("unsir")
def unsir(
    apply_fn: ApplyFn,
    *,
    num_classes: int | None = None,
    forget_set: Mapping | None = None,
    noise_batch: int = 32,
    noise_steps: int = 8,
    noise_lr: float = 0.1,
    noise_l2: float = 0.1,
    impair_fraction: float = 1 / 3,
    impair_steps: int | None = None,
    impair_retain: bool = True,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
) -> Method:
    """UNSIR: error-maximising noise, an impair phase and a repair phase.

    (a) ``init(variables, key=key)`` draws ``noise ~ N(0, 1)`` of shape
    ``[noise_batch, *image]`` from ``key`` and minimises
    ``-CE(model(noise), y) + noise_l2 * mean_b sum noise_b^2`` with Adam
    (``noise_lr``, ``noise_steps`` steps, model in eval mode), where ``y_i`` is
    the label of forget example ``i mod len(forget_set)``: noise that the
    original model gets maximally wrong for the forget labels. The noise and
    its labels are stored in ``state.extra``.

    (b) Impair, for the first ``impair_steps`` real steps (default
    ``round(impair_fraction * num_steps)`` of the run's ``num_steps`` given to
    ``init``; without ``num_steps``, one epoch of ``steps_per_epoch`` steps, the
    paper's single impair epoch): cross-entropy of the noise batch with its
    labels, together with the retain batch when ``impair_retain`` (the
    paper's impair step, on noise mixed with retain samples: one forward pass
    over both, mean over all their examples); ``impair_retain=False`` trains
    on the noise only (the DLFD reference code).

    (c) Repair, for the remaining steps: plain retain cross-entropy.

    The phase is chosen from ``state.step`` inside the objective (by masking
    which examples count), so a step is type-stable and compiles once.
    Optimiser: Adam at ``learning_rate`` 1e-3 in both phases, the DLFD
    reference code's setting (the paper uses Adam at 0.02 for impair and 0.01
    for repair); the rate is sweepable via ``state.hparams``. Metrics:
    ``impair`` (1.0 / 0.0), ``noise_ce``, ``retain_ce``, ``retain_acc``.

    Args:
      apply_fn: model apply function.
      num_classes: optional; when given, the forget labels are checked
        against it.
      forget_set: ``{"image", "label"}`` arrays of the forget set (labels and
        image shape of the noise). Required.
      noise_batch: number of noise images.
      noise_steps, noise_lr, noise_l2: the noise optimisation (DLFD code: 8
        steps, Adam lr 0.1, l2 weight 0.1).
      impair_fraction: fraction of the run's steps spent impairing, in [0, 1].
      impair_steps: explicit number of impair steps (overrides the fraction).
      impair_retain: impair on noise plus the retain batch (paper) or on the
        noise alone (DLFD code).
      tx: optimiser; default ``optax.adam`` at the sweepable ``learning_rate``.

    References:
      Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> forget = {"image": np.zeros((5, 2, 2, 1), np.float32),
      ...           "label": np.array([0, 1, 2, 0, 1])}
      >>> v = models.init(model, jax.random.key(0), forget["image"][:1])
      >>> m = methods.unsir(models.make_apply_fn(model), forget_set=forget,
      ...                   noise_batch=4)
      >>> s = m.init(v, key=jax.random.key(1), num_steps=9)
      >>> s.extra["noise"].shape, s.extra["noise_label"].tolist()
      ((4, 2, 2, 1), [0, 1, 2, 0])
      >>> int(s.extra["impair_until"])
      3
    """
    _check_callable("apply_fn", apply_fn)
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, low=2)
    if forget_set is None:
        raise ValueError("unsir needs `forget_set` ({'image', 'label'} arrays).")
    if not isinstance(forget_set, Mapping) or not {"image", "label"} <= set(forget_set):
        raise ValueError("`forget_set` must be a mapping with 'image' and 'label'.")
    images = np.asarray(forget_set["image"])
    labels = np.asarray(forget_set["label"])
    if images.ndim < 2 or len(images) == 0 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"`forget_set` must hold a non-empty batch of images [N, ...] and "
            f"labels [N]; got {images.shape} and {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`forget_set` labels must be integers, got {labels.dtype}.")
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`forget_set` labels must lie in [0, num_classes={num_classes})."
        )
    noise_batch = check_int("noise_batch", noise_batch, low=1)
    noise_steps = check_int("noise_steps", noise_steps, low=0)
    noise_lr = check_hparam("noise_lr", noise_lr, low_open=True)
    noise_l2 = check_hparam("noise_l2", noise_l2)
    impair_fraction = check_hparam("impair_fraction", impair_fraction, high=1.0)
    if impair_steps is not None:
        impair_steps = check_int("impair_steps", impair_steps, low=0)
    impair_retain = _check_bool("impair_retain", impair_retain)
    _check_tx(tx)
    lr = None
    if tx is None:
        lr = check_hparam("learning_rate", learning_rate, low_open=True)
        tx = optax.adam(1.0)  # Adam is linear in its rate: scaled by hparams

    dtype = images.dtype if np.issubdtype(images.dtype, np.floating) else np.float32
    noise_shape = (noise_batch, *images.shape[1:])
    noise_label = jnp.asarray(labels[np.arange(noise_batch) % len(labels)], jnp.int32)

    def loss_fn(variables, batch, key, hparams, extra, step):
        retain = batch["retain"]
        impair = step < extra["impair_until"]
        noise = extra["noise"]
        n = noise.shape[0]
        x = jnp.concatenate([noise, retain["image"].astype(noise.dtype)])
        y = jnp.concatenate([extra["noise_label"], retain["label"]])
        retain_on = retain["mask"] & (jnp.logical_not(impair) | impair_retain)
        mask = jnp.concatenate([jnp.broadcast_to(impair, (n,)), retain_on])
        logits, variables = apply_fn(variables, x, train=True, key=key, mask=mask)
        ce = losses.cross_entropy(logits, y)
        loss = losses.masked_mean(ce, mask)
        correct = (jnp.argmax(logits[n:], -1) == retain["label"]).astype(jnp.float32)
        metrics = {
            "impair": impair.astype(jnp.float32),
            "noise_ce": jnp.mean(ce[:n]),
            "retain_ce": losses.masked_mean(ce[n:], retain["mask"]),
            "retain_acc": losses.masked_mean(correct, retain["mask"]),
        }
        return loss, (variables, metrics)

    base = gradient_method(loss_fn, tx, learning_rate=lr)

    def init(variables, *, key=None, hparams=None, **context) -> UnlearnState:
        if key is None:
            raise ValueError("unsir draws its initial noise from key=: pass it.")
        until = _impair_steps(impair_steps, impair_fraction, context)
        state = base.init(variables, key=key, hparams=hparams, **context)
        noise0 = jax.random.normal(key, noise_shape, dtype)
        noise = error_maximising_noise(
            apply_fn,
            state.variables,
            noise_label,
            noise0,
            steps=noise_steps,
            learning_rate=noise_lr,
            l2=noise_l2,
        )
        extra = {
            "noise": noise,
            "noise_label": noise_label,
            "impair_until": jnp.asarray(until, jnp.int32),
        }
        return dataclasses.replace(state, extra=extra)

    return Method(init=init, step=base.step, driver="retain", spec=base.spec)
