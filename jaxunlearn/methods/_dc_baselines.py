"""Baselines of the Blend + A-AMU paper's tables: pruning, bad distillation,
SSD and Fisher forgetting.

``pruning`` and ``bad_distillation`` are gradient methods; ``ssd`` and
``fisher`` are one-shot: ``init`` edits the original model and ``step`` only
counts steps (run them for one epoch).

References:
  Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023)
  for iterative magnitude pruning as unlearning.
  Chundawat et al., "Can Bad Teaching Induce Forgetting?" (AAAI 2023).
  Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining
  Through Selective Synaptic Dampening" (AAAI 2024).
  Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net: Selective
  Forgetting in Deep Networks" (CVPR 2020).
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import data as data_lib
from jaxunlearn import losses
from jaxunlearn.methods._base import (
    Method,
    UnlearnState,
    check_hparam,
    check_int,
    gradient_method,
    objective_of,
    register,
    sgd_tx,
)
from jaxunlearn.methods._common import batch_ce
from jaxunlearn.methods._teachers import _check_callable, _check_tx, bad_teacher
from jaxunlearn.types import ApplyFn, PyTree

# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def _host_set(name: str, s) -> tuple[np.ndarray, np.ndarray]:
    """``(images float32, labels int32)`` of a non-empty ``{"image", "label"}``."""
    if not isinstance(s, Mapping) or not {"image", "label"} <= set(s):
        raise ValueError(
            f"`{name}` must be a mapping with 'image' and 'label' arrays, got "
            f"{type(s).__name__}."
        )
    images = np.asarray(s["image"], np.float32)
    labels = np.asarray(s["label"], np.int32)
    if len(labels) == 0 or len(images) != len(labels):
        raise ValueError(
            f"`{name}` must hold as many images as labels, at least one; got "
            f"{len(images)} images and {len(labels)} labels."
        )
    return images, labels


def _stack(images, labels, batch_size: int) -> dict:
    """``[num_batches, batch_size, ...]`` image / label / mask arrays."""
    return data_lib.padded_batches({"image": images, "label": labels}, batch_size)


def _check_hparams(hparams, defaults) -> dict:
    unknown = set(hparams or {}) - set(defaults)
    if unknown:
        raise ValueError(
            f"unknown hparams {sorted(unknown)}; valid: {sorted(defaults)}."
        )
    merged = {**defaults, **(hparams or {})}
    return {k: jnp.asarray(v, jnp.float32) for k, v in merged.items()}


def _one_shot(edit, defaults: Mapping[str, float], needs_key: bool) -> Method:
    """A ``Method`` whose ``init`` runs ``edit(variables, key, hparams)`` once
    and whose ``step`` only counts steps (the ``svd`` pattern)."""

    def init(variables, *, key=None, hparams=None, **context):
        del context
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError("`variables` must contain a 'params' collection.")
        if needs_key and key is None:
            raise ValueError("this method draws noise at init: pass key=.")
        hp = _check_hparams(hparams, defaults)
        return UnlearnState(
            step=jnp.zeros((), jnp.int32),
            variables=dict(edit(dict(variables), key, hp)),
            opt_state=(),
            hparams=hp,
            extra={},
        )

    def step(state, batch, key):
        del batch, key  # the model was edited in init
        zero = jnp.zeros((), jnp.float32)
        return dataclasses.replace(state, step=state.step + 1), {"loss": zero}

    return Method(init, step, "retain")


# --------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------

PRUNE_TARGETS = ("auto", "conv", "kernels")
"""``"conv"``: every 4-D ``kernel`` (2-D convolutions); ``"kernels"``: every
``kernel`` of 2 or more dimensions (Dense and Conv); ``"auto"``: the conv
kernels, or every kernel when the model has no convolution (an MLP)."""


def _prune_paths(params, target: str) -> tuple:
    """Paths (``jax.tree_util`` key paths) of the parameters pruned."""
    leaves = jax.tree_util.tree_leaves_with_path(params)

    def is_kernel(path, x):
        last = path[-1]
        return getattr(last, "key", None) == "kernel" and jnp.ndim(x) >= 2

    kernels = [p for p, x in leaves if is_kernel(p, x)]
    conv = [p for p, x in leaves if is_kernel(p, x) and jnp.ndim(x) == 4]
    chosen = {"conv": conv, "kernels": kernels, "auto": conv or kernels}[target]
    if not chosen:
        raise ValueError(f"pruning: no parameter matches target={target!r}.")
    return tuple(chosen)


def prune_schedule(
    num_epochs: int, *, prune_every: int = 5, target_sparsity: float = 0.95
) -> tuple[tuple[int, ...], float]:
    """Epochs that start with a prune, and the fraction each prune removes.

    The epochs are those ``e < num_epochs`` with ``(num_epochs - e) %
    prune_every == 0``; each prune removes ``1 - (1 - target_sparsity) **
    (1 / P)`` of the weights still unpruned, ``P`` the number of prunes, so
    the run ends at ``target_sparsity``.

    Examples:
      >>> epochs, rate = prune_schedule(20)
      >>> epochs, round(rate, 4)
      ((0, 5, 10, 15), 0.5271)
    """
    num_epochs = check_int("num_epochs", num_epochs)
    prune_every = check_int("prune_every", prune_every, low=1)
    target_sparsity = check_hparam("target_sparsity", target_sparsity, high=1.0)
    epochs = tuple(e for e in range(num_epochs) if (num_epochs - e) % prune_every == 0)
    if not epochs:
        return epochs, 0.0
    return epochs, 1.0 - (1.0 - target_sparsity) ** (1.0 / len(epochs))


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def _set(tree, path, value):
    head = path[0].key
    if len(path) == 1:
        return {**tree, head: value}
    return {**tree, head: _set(tree[head], path[1:], value)}


def _global_prune(params, mask, paths, num_pruned):
    """Masks so that exactly ``num_pruned`` of the target weights are pruned:
    the already-pruned ones, then the smallest ``|w|`` among the kept ones
    (one global ranking over all targets; ties go to the lower flat index)."""
    ws = [_get(params, p) for p in paths]
    ms = [_get(mask, p) for p in paths]
    scores = jnp.concatenate(
        [
            jnp.where(m > 0, jnp.abs(w), -jnp.inf).ravel().astype(jnp.float32)
            for w, m in zip(ws, ms, strict=True)
        ]
    )
    order = jnp.argsort(scores, stable=True)
    ranks = (
        jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    )
    keep = ranks >= num_pruned
    offset = 0
    for p, w in zip(paths, ws, strict=True):
        new_m = keep[offset : offset + w.size].reshape(w.shape).astype(w.dtype)
        offset += w.size
        mask = _set(mask, p, new_m)
        params = _set(params, p, w * new_m)
    return params, mask


@register("pruning")
def pruning(
    apply_fn: ApplyFn,
    *,
    target_sparsity: float = 0.95,
    prune_every: int = 5,
    prune_epochs: Sequence[int] | None = None,
    prune_rate: float | None = None,
    target: str = "auto",
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 0.04,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Method:
    """Retain fine-tuning with iterative global unstructured magnitude pruning.

    Each step minimises the retain cross-entropy (SGD with momentum and
    coupled weight decay, sweepable ``state.hparams["learning_rate"]``). At
    the start of each prune epoch, before that epoch's first gradient step,
    the target weights are pruned globally by L1 magnitude: among the weights
    not yet pruned, the ``round(rate * remaining)`` smallest ``|w|`` over all
    target tensors together (one ranking, not per layer) get mask 0, as
    PyTorch's ``prune.global_unstructured(..., L1Unstructured, amount=rate)``
    repeated on an already-pruned model. Pruned weights are set to exactly 0
    and stay 0: the masks (``state.extra["mask"]``) multiply the gradients
    and the final updates, so neither momentum nor weight decay moves them.

    Schedule (the Blend + A-AMU repository's ``prunning.py``): with ``E``
    epochs, prune at the start of the epochs ``e`` with ``(E - e) %
    prune_every == 0`` (``e = 0, 5, 10, 15`` for ``E = 20``), each prune
    removing ``rate = 1 - (1 - target_sparsity) ** (1 / P)`` of the remaining
    weights, ``P`` the number of prunes (``0.527`` for 4 prunes to 95%), so
    that the run ends at ``target_sparsity``. (The repository computes ``P``
    as ``(E - 1) // prune_every + 1``, the same count when ``prune_every``
    divides ``E``.) ``E`` and the epoch length come from ``init``'s
    ``num_steps`` and ``steps_per_epoch`` (``train.unlearn`` passes both);
    without ``steps_per_epoch`` every step counts as an epoch.
    ``prune_epochs`` replaces the rule by explicit epochs and ``prune_rate``
    the rate. The numbers of weights pruned after each prune are computed on
    the host at ``init`` and stored with the prune steps (int32 arrays in
    ``state.extra``); the step prunes under ``lax.cond`` on the step counter,
    so it is type-stable under ``jit`` and ``vmap``. A step whose retain
    batch holds no real example leaves the state unchanged (no prune either).

    Targets (``target``, see :data:`PRUNE_TARGETS`): by default all conv
    kernels (4-D ``kernel`` parameters), as the reference prunes every
    ``Conv2d`` weight; a model without convolutions (an MLP) has all its Dense
    kernels pruned instead, the classifier's included. Biases and
    normalisation parameters are never pruned.

    Metrics: ``sparsity`` (pruned fraction of the target weights after the
    step), ``pruned`` (1. on a step that pruned), ``retain_ce``,
    ``retain_acc``.

    Args:
      apply_fn: model apply function.
      target_sparsity: pruned fraction at the end of the run, in [0, 1).
      prune_every: ``prune_every`` of the schedule rule (int >= 1).
      prune_epochs: explicit prune epochs (ints >= 0), replacing the rule.
      prune_rate: fraction of the remaining weights each prune removes, in
        [0, 1); default from ``target_sparsity`` and the number of prunes.
      target: which weights are pruned (:data:`PRUNE_TARGETS`).
      tx, learning_rate, momentum, weight_decay: the optimiser (default SGD,
        lr 0.04, momentum 0.9, weight decay 5e-4, the repository's CIFAR-10
        ResNet-18 values).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(8,))
      >>> x = jnp.ones((4, 2, 2, 1))
      >>> v = models.init(model, jax.random.key(0), x)
      >>> m = methods.pruning(models.make_apply_fn(model), prune_every=2)
      >>> state = m.init(v, num_steps=4, steps_per_epoch=1)  # prunes at 0, 2
      >>> part = {"image": x, "label": jnp.zeros(4, int), "mask": jnp.ones(4, bool)}
      >>> sparsity = []
      >>> for _ in range(4):
      ...     state, metrics = m.step(state, {"retain": part}, jax.random.key(1))
      ...     sparsity.append(round(float(metrics["sparsity"]), 2))
      >>> sparsity
      [0.77, 0.77, 0.95, 0.95]
    """
    _check_callable("apply_fn", apply_fn)
    _check_tx(tx)
    target_sparsity = check_hparam("target_sparsity", target_sparsity, high=1.0)
    if target_sparsity >= 1.0:
        raise ValueError(f"`target_sparsity` must be < 1, got {target_sparsity!r}.")
    prune_every = check_int("prune_every", prune_every, low=1)
    if prune_epochs is not None:
        if isinstance(prune_epochs, str | bytes) or not isinstance(
            prune_epochs, Sequence
        ):
            raise TypeError(
                f"`prune_epochs` must be a sequence of ints, got {prune_epochs!r}."
            )
        prune_epochs = tuple(
            sorted({check_int("prune_epochs", e) for e in prune_epochs})
        )
    if prune_rate is not None:
        prune_rate = check_hparam("prune_rate", prune_rate, high=1.0)
        if prune_rate >= 1.0:
            raise ValueError(f"`prune_rate` must be < 1, got {prune_rate!r}.")
    if target not in PRUNE_TARGETS:
        raise ValueError(f"`target` must be one of {PRUNE_TARGETS}, got {target!r}.")

    def loss_fn(variables, batch, key, hparams, extra, step):
        ce, variables, acc = batch_ce(apply_fn, variables, batch["retain"], key)
        return ce, (variables, {"retain_ce": ce, "retain_acc": acc})

    def make_extra(variables):
        params = variables["params"]
        paths = set(_prune_paths(params, target))
        mask = jax.tree_util.tree_map_with_path(
            lambda p, x: jnp.ones_like(x) if p in paths else jnp.ones((), x.dtype),
            params,
        )
        return {"mask": mask}

    def init_hook(state, *, num_steps=None, steps_per_epoch=None, **context):
        spe = 1 if steps_per_epoch is None else max(int(steps_per_epoch), 1)
        if prune_epochs is None:
            if num_steps is None:
                raise ValueError(
                    "pruning derives its schedule from the run length: pass "
                    "num_steps= (and steps_per_epoch=) to init, as train.unlearn "
                    "does, or prune_epochs= to the factory."
                )
            epochs, rate = prune_schedule(
                -(-int(num_steps) // spe),
                prune_every=prune_every,
                target_sparsity=target_sparsity,
            )
        else:
            epochs = prune_epochs
            rate = 1.0 - (1.0 - target_sparsity) ** (1.0 / max(len(epochs), 1))
        if prune_rate is not None:
            rate = prune_rate
        paths = _prune_paths(state.variables["params"], target)
        remaining = sum(
            int(np.prod(_get(state.variables["params"], p).shape)) for p in paths
        )
        total, counts = remaining, []
        for _ in epochs:
            remaining -= round(rate * remaining)  # Python's round, as PyTorch
            counts.append(total - remaining)
        extra = {
            **state.extra,
            "prune_steps": jnp.asarray([e * spe for e in epochs], jnp.int32),
            "prune_counts": jnp.asarray(counts, jnp.int32),
        }
        return dataclasses.replace(state, extra=extra)

    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    base = gradient_method(
        loss_fn,
        tx,
        learning_rate=lr,
        update_mask=lambda state: state.extra["mask"],
        make_extra=make_extra,
        init_hook=init_hook,
    )

    def prune(state):
        extra = state.extra
        hit = state.step == extra["prune_steps"]
        num_pruned = jnp.sum(jnp.where(hit, extra["prune_counts"], 0))
        paths = _prune_paths(state.variables["params"], target)

        def do(state):
            params, mask = _global_prune(
                state.variables["params"], state.extra["mask"], paths, num_pruned
            )
            return dataclasses.replace(
                state,
                variables={**state.variables, "params": params},
                extra={**state.extra, "mask": mask},
            )

        return jax.lax.cond(jnp.any(hit), do, lambda s: s, state), jnp.any(hit)

    def sparsity(state):
        paths = _prune_paths(state.variables["params"], target)
        leaves = [_get(state.extra["mask"], p) for p in paths]
        zeros = sum(jnp.sum(m == 0) for m in leaves)
        return zeros / sum(m.size for m in leaves)

    def step(state, batch, key):
        pruned_state, did = prune(state)
        new, metrics = base.step(pruned_state, batch, key)
        real = jnp.any(batch["retain"]["mask"]) if "mask" in batch["retain"] else True
        new = jax.tree.map(lambda a, b: jnp.where(real, a, b), new, state)
        metrics = {
            **metrics,
            "sparsity": jnp.where(real, sparsity(new), 0.0),
            "pruned": jnp.where(real & did, 1.0, 0.0).astype(jnp.float32),
        }
        return new, metrics

    # Not a plain gradient method: a rebuild by `with_objective` would lose
    # the prune steps, so it has no spec.
    return Method(base.init, step, "retain")


# --------------------------------------------------------------------------
# Bad distillation
# --------------------------------------------------------------------------


@register("bad_distillation")
def bad_distillation(
    apply_fn: ApplyFn,
    *,
    init_fn=None,
    temperature: float = 2.0,
    retain_fraction: float = 1.0,
    retain_set: Mapping | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Method:
    """Bad-teacher distillation as the Blend + A-AMU repository runs it.

    The objective is :func:`bad_teacher`'s (``variant="original"``; it is
    taken from that method, not re-implemented): one student forward in
    training mode over the combined retain + forget batch, whose target is
    ``softmax(original / T)`` on retain rows and ``softmax(bad / T)`` on
    forget rows, ``bad`` a randomly initialised model ``init_fn(key)`` drawn
    with ``init``'s key; the loss is ``KL(target_T || student_T)`` averaged
    over the real rows (PyTorch's ``kl_div(log_softmax(student / T),
    target, reduction="batchmean")``). The differences from ``bad_teacher``:

    * the loss is multiplied by ``T**2`` (the repository's ``UnlearnerLoss``;
      ``bad_teacher`` follows Chundawat et al.'s code, which has no factor);
    * ``T = 2`` (not 1), and SGD with momentum 0.9, weight decay 5e-4, lr
      1e-2 (not Adam at 1e-4);
    * ``retain_fraction``: the repository's uncondensed runs distil on a
      random 62.3% of the retain set (72.3% on CINIC-10). Here a fixed subset
      of ``round(retain_fraction * n_retain)`` retain examples is drawn at
      ``init`` (from ``fold_in(key, 1)``; needs ``retain_set``, and batches
      carrying ``"index"``, as ``train.unlearn``'s do); the other retain
      rows are masked out of the loss and of BatchNorm. An epoch is still a
      pass over the whole retain set; to also shorten the epochs, give
      ``train.unlearn`` an ``include`` mask instead.

    The repository shuffles forget and retain into one data set, so a batch
    holds them in proportion to the two set sizes; here the retain set drives
    the epoch and the forget set is cycled beside it, each batch holding the
    two batch sizes' rows: pass ``train.unlearn`` a ``batch_size`` mapping in
    the sets' ratio to match the proportion.

    Metrics: ``retain_kl``, ``forget_kl`` (both times ``T**2``).

    Args:
      apply_fn: model apply function.
      init_fn: ``init_fn(key) -> variables`` (the bad teacher). Required.
      temperature: ``T`` (> 0), sweepable as ``state.hparams["temperature"]``.
      retain_fraction: fraction of the retain set distilled on, in (0, 1].
      retain_set: the retain set (context argument; only its size is used).
      tx, learning_rate, momentum, weight_decay: the optimiser (default SGD,
        sweepable rate).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> x = jnp.ones((2, 2, 2, 1))
      >>> init_fn = lambda k: models.init(model, k, x)
      >>> m = methods.bad_distillation(models.make_apply_fn(model),
      ...                              init_fn=init_fn)
      >>> state = m.init(init_fn(jax.random.key(0)), key=jax.random.key(1))
      >>> sorted(state.hparams)
      ['learning_rate', 'temperature']
      >>> part = {"image": x, "label": jnp.zeros(2, int), "mask": jnp.ones(2, bool)}
      >>> state, metrics = m.step(state, {"retain": part, "forget": part},
      ...                         jax.random.key(2))
      >>> int(state.step), bool(metrics["forget_kl"] > 0)
      (1, True)
    """
    _check_callable("apply_fn", apply_fn)
    if init_fn is None:
        raise ValueError(
            "bad_distillation needs `init_fn`=(key -> fresh variables) for its "
            "bad teacher."
        )
    _check_callable("init_fn", init_fn)
    _check_tx(tx)
    temperature = check_hparam("temperature", temperature, low_open=True)
    retain_fraction = check_hparam(
        "retain_fraction", retain_fraction, low_open=True, high=1.0
    )
    subset = retain_fraction < 1.0
    n_retain = 0
    if subset:
        if retain_set is None:
            raise ValueError(
                "bad_distillation with retain_fraction < 1 needs retain_set=."
            )
        n_retain = len(_host_set("retain_set", retain_set)[1])
    n_keep = max(1, round(retain_fraction * n_retain))
    # The bad teacher's objective and teachers; its optimiser is not used.
    teacher = bad_teacher(
        apply_fn, init_fn=init_fn, temperature=temperature, tx=optax.identity()
    )
    base_objective = objective_of(teacher)

    def keep_mask(key):
        chosen = jax.random.permutation(key, n_retain)[:n_keep]
        return jnp.zeros(n_retain, bool).at[chosen].set(True)

    def objective(variables, batch, key, hparams, extra, step):
        if subset:
            r = batch["retain"]
            if "index" not in r:
                raise ValueError(
                    "bad_distillation with retain_fraction < 1 needs batches "
                    "with an 'index' entry (train.unlearn's batches have one)."
                )
            r = {**r, "mask": r["mask"] & extra["retain_keep"][r["index"]]}
            batch = {**batch, "retain": r}
        loss, (variables, metrics) = base_objective(
            variables, batch, key, hparams, extra, step
        )
        t2 = hparams["temperature"] ** 2
        return t2 * loss, (variables, {k: t2 * v for k, v in metrics.items()})

    def make_extra(variables, key=None):
        key = jax.random.key(0) if key is None else key
        extra = {"teacher": variables, "incompetent": dict(init_fn(key))}
        if subset:
            extra["retain_keep"] = keep_mask(jax.random.fold_in(key, 1))
        return extra

    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    base = gradient_method(
        objective,
        tx,
        learning_rate=lr,
        hparams={"temperature": temperature},
        make_extra=make_extra,
    )

    def init(variables, *, key=None, **kwargs):
        state = base.init(variables, key=key, **kwargs)
        if key is not None:  # teachers from the caller's key
            state = dataclasses.replace(state, extra=make_extra(variables, key))
        return state

    return base._replace(init=init)


# --------------------------------------------------------------------------
# Selective Synaptic Dampening
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)  # one compiled pass per model and batch size
def _batch_grad_squares(apply_fn, batch_size: int):
    """``fn(variables, images, labels) -> params-shaped mean over batches of
    (gradient of the batch-mean cross-entropy) ** 2`` (eval mode), jitted."""

    def sq_grad(variables, x, y, mask):
        def ce(p):
            logits, _ = apply_fn({**variables, "params": p}, x, train=False)
            return losses.masked_mean(losses.cross_entropy(logits, y), mask)

        return jax.tree.map(jnp.square, jax.grad(ce)(variables["params"]))

    @jax.jit
    def run(variables, images, labels, masks):
        def body(acc, b):
            x, y, m = b
            return jax.tree.map(jnp.add, acc, sq_grad(variables, x, y, m)), None

        zero = jax.tree.map(jnp.zeros_like, variables["params"])
        total, _ = jax.lax.scan(body, zero, (images, labels, masks))
        return jax.tree.map(lambda t: t / images.shape[0], total)

    def fn(variables, images, labels):
        s = _stack(images, labels, batch_size)
        return run(variables, s["image"], s["label"], s["mask"])

    return fn


def ssd_importance(
    apply_fn: ApplyFn, variables, dataset: Mapping, *, batch_size: int = 64
) -> PyTree:
    """SSD's importance: the mean over batches of the squared gradient of the
    batch-mean cross-entropy, per parameter (eval mode: BatchNorm uses and
    keeps its running statistics). Batches are taken in order, the last one
    short (a masked mean over its real rows), as a PyTorch loader without
    ``drop_last`` gives them.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> v = models.init(model, jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
      >>> ds = {"image": np.ones((5, 2, 2, 1)), "label": np.zeros(5, int)}
      >>> imp = methods.ssd_importance(models.make_apply_fn(model), v, ds,
      ...                              batch_size=2)
      >>> imp["head"]["kernel"].shape
      (4, 3)
    """
    images, labels = _host_set("dataset", dataset)
    batch_size = check_int("batch_size", batch_size, low=1)
    return _batch_grad_squares(apply_fn, batch_size)(variables, images, labels)


def ssd_dampen(params, forget_importance, full_importance, hparams):
    """SSD's edit: where ``I_f > alpha * I_D``, ``theta *= min((lambda * I_D /
    I_f) ** exponent, lower_bound)``; elsewhere ``theta`` is unchanged.

    ``hparams``: ``selection_weighting`` (alpha), ``dampening_constant``
    (lambda), ``exponent``, ``lower_bound``.
    """
    a, lam = hparams["selection_weighting"], hparams["dampening_constant"]
    expo, bound = hparams["exponent"], hparams["lower_bound"]

    def one(p, i_f, i_d):
        selected = i_f > a * i_d
        ratio = lam * i_d / jnp.where(selected, i_f, 1.0)
        factor = jnp.minimum(ratio**expo, bound)
        return jnp.where(selected, p * factor, p).astype(p.dtype)

    return jax.tree.map(one, params, forget_importance, full_importance)


@register("ssd")
def ssd(
    apply_fn: ApplyFn,
    *,
    forget_set: Mapping | None = None,
    retain_set: Mapping | None = None,
    selection_weighting: float = 10.0,
    dampening_constant: float = 1.0,
    exponent: float = 1.0,
    lower_bound: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> Method:
    """Selective Synaptic Dampening (one-shot).

    At ``init``: the importances ``I_f`` (on the forget set) and ``I_D`` (on
    the full training data, retain + forget) are computed with
    :func:`ssd_importance` on the original model in eval mode (BatchNorm
    statistics are neither used from the batch nor updated), and every
    parameter with ``I_f > alpha * I_D`` is multiplied by ``min((lambda * I_D
    / I_f) ** exponent, lower_bound)`` (:func:`ssd_dampen`); the others are
    left bit-for-bit unchanged. ``step`` only counts steps: run one epoch.

    The importance is Foster et al.'s ``calc_importance``: per batch, the
    squared gradient of the batch-mean cross-entropy, averaged over batches
    (so it depends on ``batch_size``). The two sets are each shuffled once
    with ``seed`` (the reference loaders shuffle; this order is fixed). The
    defaults (``alpha = 10``, ``lambda = 1``, exponent 1, lower bound 1) are
    the paper's and the Blend + A-AMU repository's. That repository's
    ``ssd.py`` passes its two importances to ``modify_weight`` in swapped
    roles (it dampens where ``I_D > alpha * I_f``); this is the paper's rule.

    The four scalars are ``state.hparams`` (read by ``init``, so
    ``train.unlearn_replicas`` can sweep them).

    Args:
      apply_fn: model apply function.
      forget_set, retain_set: the sets (context arguments).
      selection_weighting: alpha (>= 0).
      dampening_constant: lambda (>= 0).
      exponent: exponent of the dampening factor (>= 0).
      lower_bound: cap on the factor (>= 0; 1 never amplifies).
      batch_size: batch size of the importance passes (int >= 1).
      seed: seed of the one-time shuffles.

    References:
      Foster et al., "Fast Machine Unlearning Without Retraining Through
      Selective Synaptic Dampening" (AAAI 2024).

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> rng = np.random.default_rng(0)
      >>> sets = {n: {"image": rng.normal(size=(6, 2, 2, 1)),
      ...             "label": rng.integers(0, 3, 6)} for n in ("f", "r")}
      >>> m = methods.ssd(models.make_apply_fn(model), forget_set=sets["f"],
      ...                 retain_set=sets["r"])
      >>> state = m.init(models.init(model, jax.random.key(0), jnp.zeros((1, 2, 2, 1))))
      >>> sorted(state.hparams)
      ['dampening_constant', 'exponent', 'lower_bound', 'selection_weighting']
    """
    _check_callable("apply_fn", apply_fn)
    if forget_set is None or retain_set is None:
        raise ValueError("ssd needs forget_set= and retain_set=.")
    f_images, f_labels = _host_set("forget_set", forget_set)
    r_images, r_labels = _host_set("retain_set", retain_set)
    defaults = {
        "selection_weighting": check_hparam("selection_weighting", selection_weighting),
        "dampening_constant": check_hparam("dampening_constant", dampening_constant),
        "exponent": check_hparam("exponent", exponent),
        "lower_bound": check_hparam("lower_bound", lower_bound),
    }
    batch_size = check_int("batch_size", batch_size, low=1)
    seed = check_int("seed", seed)
    rng = np.random.default_rng(seed)
    f_order = rng.permutation(len(f_labels))
    d_images = np.concatenate([r_images, f_images])
    d_labels = np.concatenate([r_labels, f_labels])
    d_order = rng.permutation(len(d_labels))
    importance = _batch_grad_squares(apply_fn, batch_size)

    def edit(variables, key, hp):
        del key
        i_f = importance(variables, f_images[f_order], f_labels[f_order])
        i_d = importance(variables, d_images[d_order], d_labels[d_order])
        params = ssd_dampen(variables["params"], i_f, i_d, hp)
        return {**variables, "params": params}

    return _one_shot(edit, defaults, needs_key=False)


# --------------------------------------------------------------------------
# Fisher forgetting
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _fisher_fn(apply_fn, batch_size: int):
    """Jitted ``fn(variables, images) -> sum over examples of the expected
    Fisher diagonal sum_y p(y|x) (grad CE(x, y))**2`` (eval mode)."""

    def logits_one(variables, p, x):
        out, _ = apply_fn({**variables, "params": p}, x[None], train=False)
        return out[0]

    @jax.jit
    def run(variables, images, masks):
        params = variables["params"]

        def chunk(acc, b):
            x, m = b
            probs = jax.vmap(
                lambda xi: jax.nn.softmax(logits_one(variables, params, xi))
            )(x)
            num_classes = probs.shape[-1]

            def per_class(acc, y):
                def nll(p, xi):
                    return -jax.nn.log_softmax(logits_one(variables, p, xi))[y]

                g = jax.vmap(jax.grad(nll), in_axes=(None, 0))(params, x)
                w = jnp.where(m, probs[:, y], 0.0)
                return jax.tree.map(
                    lambda a, gi: a + jnp.tensordot(w, jnp.square(gi), axes=1), acc, g
                ), None

            acc, _ = jax.lax.scan(per_class, acc, jnp.arange(num_classes))
            return acc, None

        zero = jax.tree.map(jnp.zeros_like, params)
        total, _ = jax.lax.scan(chunk, zero, (images, masks))
        return total

    def fn(variables, images):
        s = _stack(images, np.zeros(len(images), np.int32), batch_size)
        return jax.tree.map(
            lambda t: t / len(images), run(variables, s["image"], s["mask"])
        )

    return fn


def fisher_diagonal(
    apply_fn: ApplyFn, variables, dataset: Mapping, *, batch_size: int = 64
) -> PyTree:
    """Diagonal of the (expected) Fisher information over ``dataset``:
    ``mean_x sum_y p(y|x) (d CE(f(x), y) / d theta) ** 2``, per example, the
    model in eval mode (Golatkar et al.'s ``hessian``); ``batch_size``
    examples are processed at once.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> v = models.init(model, jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
      >>> ds = {"image": np.ones((5, 2, 2, 1)), "label": np.zeros(5, int)}
      >>> f = methods.fisher_diagonal(models.make_apply_fn(model), v, ds)
      >>> bool((f["head"]["bias"] > 0).all())
      True
    """
    images, _ = _host_set("dataset", dataset)
    batch_size = check_int("batch_size", batch_size, low=1)
    return _fisher_fn(apply_fn, batch_size)(variables, images)


VARIANCE_RULES = ("reference", "elementwise")
"""``"reference"``: Golatkar et al.'s code conventions (below);
``"elementwise"``: ``alpha * min(1 / (F + 1e-8), max_inverse)`` per weight."""


def fisher_noise(
    params,
    fisher_diag,
    *,
    alpha,
    max_inverse: float = 1e3,
    head_max_inverse: float = 1e2,
    rule: str = "reference",
    forgotten_classes: Sequence[int] = (),
):
    """Mean and variance of Fisher forgetting's Gaussian, per parameter.

    ``var = alpha * min(1 / (F + 1e-8), max_inverse)``. With
    ``rule="reference"`` (Golatkar et al.'s ``get_mean_var``): the head (the
    ``"head"`` group) is clamped at ``head_max_inverse`` instead; kernels
    (ndim >= 2) share one variance per output unit and kernel position, the
    mean over their input axis (PyTorch's ``dim=1``, Flax's axis -2); the
    head's units of ``forgotten_classes`` get mean 0 and variance ``1e-4``;
    then the head's variances and those of every 1-D parameter are
    multiplied by 10. Returns ``(mean, var)`` trees.
    """
    if rule not in VARIANCE_RULES:
        raise ValueError(f"`rule` must be one of {VARIANCE_RULES}, got {rule!r}.")
    classes = jnp.asarray(sorted(forgotten_classes), jnp.int32)

    def one(path, p, f):
        head = getattr(path[0], "key", None) == "head"
        cap = head_max_inverse if (head and rule == "reference") else max_inverse
        var = alpha * jnp.minimum(1.0 / (jnp.asarray(f) + 1e-8), cap)
        mean = jnp.asarray(p)
        if rule == "elementwise":
            return mean, var
        if p.ndim > 1:
            var = jnp.broadcast_to(jnp.mean(var, axis=-2, keepdims=True), p.shape)
        if head and classes.size:
            mean = mean.at[..., classes].set(0.0)
            var = var.at[..., classes].set(1e-4)
        if head or p.ndim == 1:
            var = var * 10.0
        return mean, var

    pairs = jax.tree_util.tree_map_with_path(one, params, fisher_diag)
    mean = jax.tree.map(lambda _, mv: mv[0], params, pairs)
    var = jax.tree.map(lambda _, mv: mv[1], params, pairs)
    return mean, var


@register("fisher")
def fisher(
    apply_fn: ApplyFn,
    *,
    retain_set: Mapping | None = None,
    forget_set: Mapping | None = None,
    alpha: float = 1e-6,
    max_inverse: float = 1e3,
    head_max_inverse: float = 1e2,
    rule: str = "reference",
    class_rule: bool = True,
    batch_size: int = 64,
) -> Method:
    """Fisher forgetting (one-shot), the simplified form of the SSD and
    Bad-Teacher repositories (and of the Blend + A-AMU repository).

    At ``init``: ``F``, the diagonal expected Fisher of the retain set
    (:func:`fisher_diagonal`, eval mode), then every parameter is replaced by
    ``mean + sqrt(var) * N(0, 1)`` with the mean and variance of
    :func:`fisher_noise`: ``var = alpha * min(1 / (F + 1e-8), 1e3)`` (so at
    most ``1e-3`` at the default ``alpha = 1e-6``), with the reference code's
    conventions by default (head clamped at ``1e2``; one variance per output
    unit, averaged over a kernel's inputs; head and 1-D parameters times 10).
    With ``class_rule`` (default), classes that appear in ``forget_set`` and
    never in ``retain_set`` (class unlearning) get the code's class-wise
    treatment: their head units are set to mean 0 with variance ``1e-4 * 10``.
    The noise is drawn from ``init``'s ``key`` (required). ``alpha`` is
    ``state.hparams["alpha"]`` (read by ``init``). BatchNorm statistics are
    not changed. ``step`` only counts steps: run one epoch.

    Args:
      apply_fn: model apply function.
      retain_set: the retain set (context argument).
      forget_set: the forget set (context argument; only its labels are
        read, for ``class_rule``).
      alpha: noise scale (>= 0; 0 leaves every weight but the forgotten head
        units unchanged).
      max_inverse, head_max_inverse: clamps of ``1 / (F + 1e-8)`` (> 0).
      rule: ``"reference"`` or ``"elementwise"`` (:data:`VARIANCE_RULES`).
      class_rule: apply the class-wise head treatment to fully forgotten
        classes (only with ``rule="reference"``).
      batch_size: examples per chunk of the Fisher pass (int >= 1).

    References:
      Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020);
      the ``hessian`` / ``get_mean_var`` functions of the SSD
      (``if-loops/selective-synaptic-dampening``) and Bad-Teacher code,
      ``alpha = 1e-6`` as in the Blend + A-AMU repository's configurations.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> retain = {"image": np.ones((5, 2, 2, 1)), "label": np.zeros(5, int)}
      >>> m = methods.fisher(models.make_apply_fn(model), retain_set=retain)
      >>> v = models.init(model, jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
      >>> state = m.init(v, key=jax.random.key(1))
      >>> bias = state.variables["params"]["head"]["bias"]
      >>> bool(0 < jnp.abs(bias - v["params"]["head"]["bias"]).max() < 0.5)
      True
    """
    _check_callable("apply_fn", apply_fn)
    if retain_set is None:
        raise ValueError("fisher needs retain_set= (its Fisher is the retain set's).")
    r_images, r_labels = _host_set("retain_set", retain_set)
    alpha = check_hparam("alpha", alpha)
    max_inverse = check_hparam("max_inverse", max_inverse, low_open=True)
    head_max_inverse = check_hparam("head_max_inverse", head_max_inverse, low_open=True)
    if rule not in VARIANCE_RULES:
        raise ValueError(f"`rule` must be one of {VARIANCE_RULES}, got {rule!r}.")
    if not isinstance(class_rule, bool):
        raise TypeError(f"`class_rule` must be a bool, got {class_rule!r}.")
    batch_size = check_int("batch_size", batch_size, low=1)
    forgotten = ()
    if class_rule and forget_set is not None:
        f_labels = _host_set("forget_set", forget_set)[1]
        forgotten = tuple(int(c) for c in np.setdiff1d(f_labels, r_labels))
    fisher_of = _fisher_fn(apply_fn, batch_size)

    def edit(variables, key, hp):
        params = variables["params"]
        f = fisher_of(variables, r_images)
        mean, var = fisher_noise(
            params,
            f,
            alpha=hp["alpha"],
            max_inverse=max_inverse,
            head_max_inverse=head_max_inverse,
            rule=rule,
            forgotten_classes=forgotten,
        )
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        noise = jax.tree.unflatten(
            treedef,
            [
                jax.random.normal(k, x.shape, x.dtype)
                for k, x in zip(keys, leaves, strict=True)
            ],
        )
        new = jax.tree.map(
            lambda m, v, z, p: (m + jnp.sqrt(v) * z).astype(p.dtype),
            mean,
            var,
            noise,
            params,
        )
        return {**variables, "params": new}

    return _one_shot(edit, {"alpha": alpha}, needs_key=True)


__all__ = [
    "PRUNE_TARGETS",
    "VARIANCE_RULES",
    "bad_distillation",
    "fisher",
    "fisher_diagonal",
    "fisher_noise",
    "prune_schedule",
    "pruning",
    "ssd",
    "ssd_dampen",
    "ssd_importance",
]
