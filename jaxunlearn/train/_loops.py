"""Training loops over the engine: ``unlearn``, ``fit``, ``unlearn_replicas``."""

import collections
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxunlearn import data as data_lib
from jaxunlearn import methods, models, optim
from jaxunlearn.train._engine import (
    EpochRunner,
    _batch_sizes,
    _host_arrays,
    _include_mask,
    _num_classes_of,
    to_host,
)


@dataclasses.dataclass
class UnlearnResult:
    """Output of :func:`unlearn`.

    Attributes:
      state: final ``UnlearnState``.
      history: per-epoch means of the step metrics, ``[{name: float}, ...]``.
      compile_time: seconds spent compiling the epoch (once).
      run_time: seconds spent running epochs (excluding compilation).
    """

    state: methods.UnlearnState
    history: list[dict[str, float]]
    compile_time: float
    run_time: float

    @property
    def variables(self):
        return self.state.variables


# Compile once per shape: a second call with the same method, data shapes,
# batch sizes and mesh reuses the epoch compiled by the first. JAX's own cache
# is keyed on the identity of the traced function, and every call builds a new
# EpochRunner (whose bound methods are new functions), so runners are kept here
# keyed on everything their compiled programs depend on. Bounded: an entry
# holds compiled executables and the method's closures.
_RUNNERS: collections.OrderedDict = collections.OrderedDict()
_RUNNERS_SIZE = 16


def _signature(tree) -> tuple:
    """Tree structure plus every leaf's abstract value and sharding."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves)


def _cached_runner(runner: EpochRunner, kind: str, *inputs) -> EpochRunner:
    """The runner an earlier call compiled for the same configuration and
    input signature, else ``runner`` itself (now remembered).

    ``kind`` is ``"single"`` or ``"replicas"``; ``inputs`` are the epoch's
    arguments (state, arrays, key, subset) as they will be passed.
    """
    method = runner.method
    try:
        key = (
            kind,
            # Method equality is identity of its functions: key on them, and
            # keep the method alive in the entry so the ids stay unique.
            id(method.init),
            id(method.step),
            method.driver,
            tuple(sorted(runner.sizes.items())),
            tuple(sorted(runner.batch_sizes.items())),
            runner.mesh,
            runner.num_steps,
            runner.mode,
            _signature(inputs),
        )
        hash(key)
    except TypeError:  # an unhashable leaf type or sharding: no reuse
        return runner
    hit = _RUNNERS.get(key)
    if hit is not None and hit[0] is method:
        _RUNNERS.move_to_end(key)
        return hit[1]
    _RUNNERS[key] = (method, runner)
    while len(_RUNNERS) > _RUNNERS_SIZE:
        _RUNNERS.popitem(last=False)
    return runner


@jax.jit
def _copy(tree):
    """A fresh copy of every leaf (the epoch donates its state), one program."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


class _ById:
    """A hashable handle comparing by identity (a static jit argument)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.obj is self.obj


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_replicas(method, num_steps, steps_per_epoch, variables, keys, hparams):
    """``method.init`` of every replica (``fold_in(keys[k], 0)``), copied (the
    epoch donates its state), as one program; ``hparams`` values are shared
    scalars or ``[K]`` arrays."""
    num = keys.shape[0]
    hp = None
    if hparams is not None:
        hp = {
            k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (num,))
            for k, v in hparams.items()
        }
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    states = jax.vmap(
        lambda v, k, h: method.obj.init(
            v,
            key=k,
            hparams=h,
            num_steps=num_steps,
            steps_per_epoch=steps_per_epoch,
        ),
        in_axes=(0, 0, None if hp is None else 0),
    )(variables, init_keys, hp)
    return jax.tree.map(lambda x: jnp.array(x, copy=True), states)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional dependency ([experiments] extra)
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def unlearn(
    method: methods.Method,
    variables: Any,
    data: Any,
    *,
    epochs: int,
    batch_size: int | Mapping[str, int],
    key: jax.Array,
    mesh: Mesh | None = None,
    hparams: Mapping[str, float] | None = None,
    progress: bool | str = False,
    callback: Callable[[int, dict[str, float], Any], bool | None] | None = None,
    include: np.ndarray | None = None,
    num_classes: int | None = None,
) -> UnlearnResult:
    """Runs ``method`` for ``epochs`` epochs; the generic unlearning runner.

    Args:
      method: a ``Method`` (see ``jaxunlearn.methods.get``).
      variables: starting Flax variables (the original model).
      data: an ``UnlearningData`` (retain and forget sets are used) or a mapping
        ``{"retain": {"image", "label"}, ...}`` of numpy arrays.
      epochs: number of passes over the method's driver set.
      batch_size: batch size for every set, or ``{set: batch size}`` (a set
        left out uses the driver set's).
      key: PRNG key; init, shuffling and step randomness are split from it.
      mesh: optional ``"data"`` mesh for data parallelism.
      hparams: overrides of the method's sweepable hyperparameters.
      progress: show a tqdm bar (a string is used as its label).
      callback: called as ``callback(epoch, epoch_metrics, state)`` after each
        epoch; returning True stops training there (early stopping, checkpoint
        selection). The state is live: copy what you keep.
      include: optional bool mask over the driver set: train on its True
        examples only. The others only ever fill padded, masked slots, which
        influence nothing (not the loss, the gradients or BatchNorm).
      num_classes: class count for label validation (default: read from the
        model's ``head``).

    Returns:
      An :class:`UnlearnResult`; ``compile_time`` and ``run_time`` are separate.

    Examples:
      >>> import jax
      >>> from jaxunlearn import data, methods, models, train
      >>> ds = data.load("digits")
      >>> split = data.split(ds, "class", forget_classes=0)
      >>> model = models.get_model("mlp", 10, hidden=(32,))
      >>> v = models.init(model, jax.random.key(0), split.retain["image"][:1])
      >>> m = methods.get("finetune", apply_fn=models.make_apply_fn(model))
      >>> r = train.unlearn(m, v, split, epochs=1, batch_size=64,
      ...                   key=jax.random.key(1))
      >>> len(r.history)
      1
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}.")
    if not isinstance(method, methods.Method):
        raise TypeError(
            f"`method` must be a methods.Method, got {type(method).__name__}."
        )
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            "`variables` must be Flax variables with a 'params' collection."
        )
    arrays, sizes = _host_arrays(data, num_classes or _num_classes_of(variables))
    subset = _include_mask(include, sizes, method.driver)
    steps = None
    if subset is not None:
        bs = _batch_sizes(batch_size, sizes, method.driver)[method.driver]
        steps = data_lib.num_batches(int(subset.sum()), bs)
    runner = EpochRunner(method, sizes, batch_size, mesh, driver_steps=steps)
    if subset is not None:
        subset = runner.place(jnp.asarray(subset))
    # Same key derivation as unlearn_replicas, so replica k == unlearn(keys[k]).
    state = method.init(
        variables,
        key=jax.random.fold_in(key, 0),
        hparams=hparams,
        num_steps=epochs * runner.num_steps,
        steps_per_epoch=runner.num_steps,
    )
    # The epoch donates its state: copy so the caller's arrays stay alive.
    state = runner.place(_copy(state))
    arrays = runner.place(arrays)
    runner = _cached_runner(runner, "single", state, arrays, key, subset)
    compile_start = runner.compile_time
    history: list[dict[str, float]] = []
    run_time = 0.0
    label = progress if isinstance(progress, str) else "unlearn"
    bar = _progress(epochs, label, bool(progress))
    for epoch in range(epochs):
        k = jax.random.fold_in(key, epoch + 1)
        runner.compile(state, arrays, k, subset)
        t0 = time.perf_counter()
        state, metrics = runner(state, arrays, k, subset)
        metrics = jax.block_until_ready(metrics)
        run_time += time.perf_counter() - t0
        summary = {name: float(np.mean(v)) for name, v in metrics.items()}
        history.append(summary)
        stop = callback(epoch, summary, state) if callback is not None else False
        if bar is not None:
            bar.set_postfix(loss=f"{summary['loss']:.4f}")
            bar.update(1)
        if stop:
            break
    if bar is not None:
        bar.close()
    return UnlearnResult(state, history, runner.compile_time - compile_start, run_time)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Supervised training recipe shared by ``train_original`` and ``retrain``.

    SGD with momentum and coupled weight decay; ``schedule`` is one of
    ``optim.SCHEDULES`` (stepped per batch).
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    step_boundaries_epochs: tuple[int, ...] = ()
    gamma: float = 0.1

    def tx(self, steps_per_epoch: int):
        total = max(1, self.epochs * steps_per_epoch)
        kind = self.schedule
        if kind == "cosine" and self.warmup_epochs:
            kind = "warmup_cosine"
        lr = optim.schedule(
            self.learning_rate,
            kind=kind,
            total_steps=total,
            warmup_steps=self.warmup_epochs * steps_per_epoch,
            boundaries=[e * steps_per_epoch for e in self.step_boundaries_epochs],
            gamma=self.gamma,
        )
        return optim.sgd(lr, momentum=self.momentum, weight_decay=self.weight_decay)


def _supervised_method(model, config: TrainConfig, steps_per_epoch: int):
    """``finetune`` with ``config``'s optimiser; the same object for the same
    arguments, so a second ``fit`` / ``train_models`` reuses its compiled
    epoch (a new method would be a new function to JAX)."""
    try:
        return _supervised_method_cached(model, config, steps_per_epoch)
    except TypeError:  # an unhashable model: build it anew
        return methods.finetune(
            models.make_apply_fn(model), tx=config.tx(steps_per_epoch)
        )


@functools.lru_cache(maxsize=32)
def _supervised_method_cached(model, config, steps_per_epoch):
    return methods.finetune(models.make_apply_fn(model), tx=config.tx(steps_per_epoch))


def fit(
    model,
    variables: Any,
    train_set: Mapping[str, np.ndarray],
    config: TrainConfig,
    *,
    key: jax.Array,
    mesh: Mesh | None = None,
    progress: bool | str = False,
    include: np.ndarray | None = None,
) -> UnlearnResult:
    """Supervised cross-entropy training of ``model`` from ``variables``.

    ``include`` (bool ``[N]``) trains on those examples of ``train_set`` only;
    the others influence nothing (see :func:`unlearn`).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}.")
    n = len(train_set["label"]) if include is None else int(np.sum(include))
    steps = data_lib.num_batches(max(n, 1), config.batch_size)
    method = _supervised_method(model, config, steps)
    return unlearn(
        method,
        variables,
        {"retain": train_set},
        epochs=config.epochs,
        batch_size=config.batch_size,
        key=key,
        mesh=mesh,
        progress=progress,
        include=include,
        num_classes=getattr(model, "num_classes", None),
    )


def unlearn_replicas(
    method: methods.Method,
    variables: Any,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    keys: jax.Array,
    mesh: Mesh | None = None,
    hparams: Mapping[str, Any] | None = None,
) -> UnlearnResult:
    """:func:`unlearn` for K replicas at once, as one vmapped program.

    ``variables`` carries a leading replica axis ``[K, ...]`` (e.g. K shadow
    models trained by :func:`train_models`, with ``keep_variables=True``), and
    ``keys`` is ``[K]``; each replica gets its own shuffling and step
    randomness. ``hparams`` values may be scalars (shared) or ``[K]`` arrays
    (a sweep). Used for the shadow-unlearned ensembles of U-LiRA and for
    seed / hyperparameter sweeps. With ``make_mesh(axis="replica")`` the
    replicas are sharded over devices. A later call with the same method,
    shapes and mesh reuses the compiled epoch (``train.sweep``'s chunks).

    Returns:
      An :class:`UnlearnResult` whose ``state`` and ``history`` entries have a
      leading replica axis (history values are lists of K floats).
    """
    arrays, sizes = _host_arrays(data)
    runner = EpochRunner(method, sizes, batch_size, mesh)
    num = keys.shape[0]
    shards = 1 if mesh is None else mesh.shape.get("replica", 1)
    if num % shards:
        raise ValueError(
            f"`keys` has {num} replicas, not divisible by the mesh's replica"
            f" axis ({shards} devices)."
        )
    hp = None if hparams is None else dict(hparams)
    states = _init_replicas(
        _ById(method), epochs * runner.num_steps, runner.num_steps, variables, keys, hp
    )
    states = runner.place_replicas(states)
    arrays = runner.place(arrays)
    runner = _cached_runner(runner, "replicas", states, arrays, keys)
    compile_start = runner.compile_time
    history, run_time = [], 0.0
    for epoch in range(epochs):
        epoch_keys = runner.place_replicas(
            jax.vmap(lambda k, e=epoch: jax.random.fold_in(k, e + 1))(keys)
        )
        compile_before = runner.compile_time
        t0 = time.perf_counter()
        states, metrics = runner.replica_epoch(states, arrays, epoch_keys)
        metrics = jax.block_until_ready(metrics)
        run_time += time.perf_counter() - t0 - (runner.compile_time - compile_before)
        history.append(
            {k: to_host(v).mean(axis=1).tolist() for k, v in metrics.items()}
        )
    return UnlearnResult(states, history, runner.compile_time - compile_start, run_time)
