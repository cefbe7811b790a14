"""The jit boundary: compiled epochs, data parallelism, runners and caching.

Everything in ``jaxunlearn`` outside this module (and the CLI / drivers) is pure
and un-jitted. Here a method's ``step`` is scanned over an epoch with
``lax.scan`` inside one ``jax.jit``; batches are gathered on device from fixed
index plans, so no shape ever changes. With a mesh, the batch axis is sharded
over the ``"data"`` axis and the state is replicated: the same program runs on
one CPU, several simulated CPU devices, or several GPUs.
"""

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxunlearn import cache, methods, models, optim
from jaxunlearn import data as data_lib

__all__ = [
    "EpochRunner",
    "TrainConfig",
    "UnlearnResult",
    "fit",
    "make_mesh",
    "make_optimizer",
    "predict",
    "retrain",
    "ShadowResult",
    "train_models",
    "train_original",
    "train_shadow_models",
    "unlearn",
    "unlearn_replicas",
    "ULiraShadows",
    "ulira_shadows",
]

make_optimizer = optim.sgd


def make_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices.

    Args:
      num_devices: how many devices (default: all).
      axis: ``"data"`` (batch sharded, state replicated) or ``"replica"``
        (vmapped models sharded, data replicated).
    """
    if axis not in ("data", "replica"):
        raise ValueError(f"axis must be 'data' or 'replica', got {axis!r}.")
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"num_devices={num_devices!r} but {len(devices)} devices are available."
        )
    return Mesh(np.array(devices[:n]), (axis,))


def _as_sets(data: Any) -> dict[str, dict[str, np.ndarray]]:
    if isinstance(data, data_lib.UnlearningData):
        return {"retain": data.retain, "forget": data.forget}
    if isinstance(data, Mapping):
        return {k: dict(v) for k, v in data.items()}
    raise TypeError(
        f"data must be an UnlearningData or a mapping of sets, got {type(data)}."
    )


def _num_classes_of(variables) -> int | None:
    """The model's class count from its ``head`` kernel, when it has one."""
    try:
        return int(variables["params"]["head"]["kernel"].shape[-1])
    except (KeyError, TypeError, AttributeError, IndexError):
        return None


def _host_arrays(data: Any, num_classes: int | None = None):
    """Validated float32 / int32 numpy sets of ``data`` and their sizes.

    Checked on the host before anything compiles: images are floating point
    (integer images must be scaled by the caller) and finite; labels are
    integers in ``[0, num_classes)`` (when the class count is known).
    """
    arrays = {}
    for name, part in _as_sets(data).items():
        if not isinstance(part, Mapping) or "image" not in part or "label" not in part:
            raise ValueError(f"data[{name!r}] must be a mapping with 'image' and 'label'.")
        images = np.asarray(part["image"])
        labels = np.asarray(part["label"])
        if len(images) != len(labels):
            raise ValueError(
                f"data[{name!r}] has {len(images)} images but {len(labels)} labels."
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(
                f"data[{name!r}]['image'] must be floating point, got {images.dtype}:"
                " scale integer images (e.g. divide uint8 pixels by 255) first."
            )
        if images.ndim < 2:
            raise ValueError(
                f"data[{name!r}]['image'] must be a batch [N, ...], got shape"
                f" {images.shape}."
            )
        if images.size and not np.all(np.isfinite(images)):
            bad = int(np.sum(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
            raise ValueError(
                f"data[{name!r}]['image'] has NaN or inf pixels in {bad} examples."
            )
        if labels.ndim != 1 or not (
            np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
        ):
            raise TypeError(
                f"data[{name!r}]['label'] must be a 1-D integer array, got"
                f" {labels.dtype} {labels.shape}."
            )
        if labels.size and labels.min() < 0:
            raise ValueError(
                f"data[{name!r}]['label'] has negative labels (min {labels.min()})."
            )
        if num_classes is not None and labels.size and labels.max() >= num_classes:
            raise ValueError(
                f"data[{name!r}]['label'] has label {labels.max()} but the model has"
                f" {num_classes} classes (valid: 0..{num_classes - 1})."
            )
        arrays[name] = {
            "image": images.astype(np.float32),
            "label": labels.astype(np.int32),
        }
    return arrays, {name: len(a["label"]) for name, a in arrays.items()}


def _include_mask(include, sizes, driver: str):
    """Validated ``[n_driver]`` bool inclusion mask (or None)."""
    if include is None:
        return None
    include = np.asarray(include)
    if include.dtype != bool or include.shape != (sizes[driver],):
        raise ValueError(
            f"`include` must be a bool [{sizes[driver]}] mask over the {driver!r}"
            f" set, got {include.dtype} {include.shape}."
        )
    if not include.any():
        raise ValueError("`include` selects no example.")
    return include


MODES = ("auto", "scan", "loop", "sequential")

ENGINE_VERSION = 2
"""Part of every cached model's manifest; bumped when training numerics change
(2: BatchNorm statistics over real batch slots only), so no model trained by
older code is ever reused."""


def _batch_sizes(batch_size, sizes: Mapping[str, int]) -> dict[str, int]:
    """``{set: batch size}`` from an int or a partial mapping (validated)."""

    def check(name, bs):
        if isinstance(bs, bool) or not isinstance(bs, int | np.integer) or bs < 1:
            raise ValueError(
                f"`batch_size` must be a positive int (set {name!r}), got {bs!r}."
            )
        return int(bs)

    if isinstance(batch_size, Mapping):
        unknown = sorted(set(batch_size) - set(sizes))
        if unknown:
            raise ValueError(
                f"`batch_size` names sets {unknown} that the data does not have"
                f" ({sorted(sizes)})."
            )
        out = {k: check(k, v) for k, v in batch_size.items()}
        default = out.get("retain") or next(iter(out.values()), None)
        if default is None:
            raise ValueError("`batch_size` mapping is empty.")
        return {name: out.get(name, default) for name in sizes}
    bs = check("*", batch_size)
    return {name: bs for name in sizes}


class EpochRunner:
    """Compiles one epoch of ``method.step``.

    An epoch is one pass over the method's driver set in batches of
    ``batch_size`` (last one padded and masked); every other set is cycled to
    the same number of steps. Batches are gathered on device from an index plan
    drawn from the key, so no shape changes. Two ways to run it:

    * ``"scan"``: the whole epoch is one compiled ``lax.scan`` program;
    * ``"loop"``: one compiled step (batch gather + ``method.step``) called once
      per batch from Python, state donated, data on device.

    ``"auto"`` (default) picks ``"loop"`` on the CPU backend when the step
    contains a convolution and ``"scan"`` otherwise: XLA:CPU runs convolutions
    inside a while loop (``lax.scan``) 30-80x slower than the same convolutions
    outside one (measured in ``experiments/results/bench_train_cpu.json``),
    while on GPUs and for dense models the scan is as fast or faster. Both modes
    give the same result.

    ``replica_epoch`` is the same epoch vmapped over a leading replica axis of
    states, keys and (optionally) per-replica subsets of the driver set: K
    seeds, shadow models or hyperparameter settings as one program. Mode
    ``"sequential"`` runs the replicas one after another with the
    single-model step instead; ``"auto"`` picks it on CPU for convolutional
    steps (XLA:CPU's vmapped convolutions are grouped convolutions, several
    times slower per model) unless a ``"replica"`` mesh shards the replicas.

    Args:
      method: the method to run.
      sizes: ``{set name: number of examples}`` (static shapes).
      batch_size: examples per set per step: an int for every set, or
        ``{set name: int}`` (each set has its own batch size and its own
        shuffling stream; a set missing from the mapping uses the driver's).
      mesh: optional mesh with a ``"data"`` axis (batches sharded) or a
        ``"replica"`` axis (replicas sharded, for ``replica_epoch``).
      driver_steps: steps per epoch when training on subsets of the driver set
        (must cover the largest subset); default one pass over all of it.
      mode: ``"auto"``, ``"scan"``, ``"loop"`` or ``"sequential"``.
    """

    def __init__(
        self,
        method: methods.Method,
        sizes: Mapping[str, int],
        batch_size: int,
        mesh: Mesh | None = None,
        driver_steps: int | None = None,
        mode: str = "auto",
    ):
        if method.driver not in sizes:
            raise ValueError(
                f"method runs over the {method.driver!r} set but data has only"
                f" {sorted(sizes)}."
            )
        for name, n in sizes.items():
            if n < 1:
                raise ValueError(f"the {name!r} set is empty.")
        self.batch_sizes = _batch_sizes(batch_size, sizes)
        if mesh is not None and "data" in mesh.shape:
            for name, bs in self.batch_sizes.items():
                if bs % mesh.shape["data"]:
                    raise ValueError(
                        f"batch_size={bs} (set {name!r}) must be divisible by the"
                        f" mesh's data axis ({mesh.shape['data']} devices)."
                    )
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        self.method = method
        self.sizes = dict(sizes)
        self.batch_size = self.batch_sizes[method.driver]
        self.mesh = mesh
        self.mode = mode
        self.num_steps = driver_steps or data_lib.num_batches(
            sizes[method.driver], self.batch_size
        )
        self._compiled = {}
        self.compile_time = 0.0

    def _plan(self, key, subset=None):
        plans = {}
        for i, (name, n) in enumerate(sorted(self.sizes.items())):
            k = jax.random.fold_in(key, i)
            bs = self.batch_sizes[name]
            if name == self.method.driver and subset is not None:
                plans[name] = data_lib.subset_epoch_indices(
                    k, subset, bs, self.num_steps
                )
            elif name == self.method.driver:
                plans[name] = data_lib.epoch_indices(k, n, bs)
            else:
                plans[name] = data_lib.cycle_indices(k, n, bs, self.num_steps)
        return plans

    def _keyed_plan(self, key, subset=None):
        k_plan, k_step = jax.random.split(key)
        return k_step, self._plan(k_plan, subset)

    def _step_on(self, state, arrays, xs, k_step):
        batch = {
            name: data_lib.gather(arrays[name], idx, mask)
            for name, (idx, mask) in xs.items()
        }
        if self.mesh is not None and "data" in self.mesh.shape:
            batch = jax.lax.with_sharding_constraint(
                batch, NamedSharding(self.mesh, P("data"))
            )
        return self.method.step(state, batch, k_step)

    def _epoch(self, state, arrays, key, subset=None):
        k_step, plans = self._keyed_plan(key, subset)
        return jax.lax.scan(
            lambda st, xs: self._step_on(st, arrays, xs, k_step), state, plans
        )

    def _replica_epoch(self, states, arrays, keys, subsets):
        in_axes = (0, None, 0, None if subsets is None else 0)
        return jax.vmap(self._epoch, in_axes=in_axes)(states, arrays, keys, subsets)

    def _indexed_step(self, state, arrays, plans, s, k_step):
        xs = jax.tree.map(lambda a: a[s], plans)
        return self._step_on(state, arrays, xs, k_step)

    def place(self, tree):
        """Puts a pytree on the device(s): replicated over the mesh if any."""
        if self.mesh is None:
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def place_replicas(self, tree):
        """Puts a pytree with a leading replica axis on the device(s), sharded
        over a ``"replica"`` mesh axis if there is one."""
        if self.mesh is None or "replica" not in self.mesh.shape:
            return self.place(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P("replica")))

    def _build(self, replicas: bool, state, arrays, key, subset):
        """Compiles the epoch for one or many replicas; returns a callable."""
        t0 = time.perf_counter()
        mode = self.mode
        if mode in ("auto", "scan"):
            epoch = self._replica_epoch if replicas else self._epoch
            lowered = jax.jit(epoch, donate_argnums=(0,)).lower(
                state, arrays, key, subset
            )
            if mode == "auto":
                slow = jax.default_backend() == "cpu" and (
                    "convolution" in lowered.as_text()
                )
                sharded = self.mesh is not None and "replica" in self.mesh.shape
                mode = "scan"
                if slow:
                    mode = "sequential" if replicas and not sharded else "loop"
        if mode == "sequential" and not replicas:
            mode = "loop"
        self.resolved_mode = mode
        if mode == "scan":
            compiled = lowered.compile()
        elif mode == "sequential":
            compiled = self._build_sequential(state, arrays, key, subset)
        else:
            plan_fn = self._keyed_plan
            step_fn = self._indexed_step
            if replicas:
                plan_fn = jax.vmap(plan_fn, in_axes=(0, None if subset is None else 0))
                step_fn = jax.vmap(step_fn, in_axes=(0, None, 0, None, 0))
            plan_c = jax.jit(plan_fn).lower(key, subset).compile()
            k_step, plans = jax.eval_shape(plan_fn, key, subset)
            steps = [jnp.asarray(i, jnp.int32) for i in range(self.num_steps)]
            step_c = (
                jax.jit(step_fn, donate_argnums=(0,))
                .lower(state, arrays, plans, steps[0], k_step)
                .compile()
            )

            def compiled(state, arrays, key, subset=None):
                k_step, plans = plan_c(key, subset)
                history = []
                for s in steps:
                    state, metrics = step_c(state, arrays, plans, s, k_step)
                    history.append(metrics)
                axis = 1 if replicas else 0
                return state, jax.tree.map(lambda *m: jnp.stack(m, axis=axis), *history)

        self.compile_time += time.perf_counter() - t0
        return compiled

    def _build_sequential(self, states, arrays, keys, subsets):
        """Replicas one after another, each with the single-model step loop.

        XLA:CPU lowers a vmapped convolution (one weight set per replica) to a
        grouped convolution that runs several times slower per model than K
        plain ones (measured: 4 vmapped CNNs 2.3x slower per model than one),
        so on CPU the replica axis is a Python loop. Same keys, same plans,
        same result as the vmapped epoch.
        """
        first = jax.tree.map(lambda x: x[0], states)
        sub0 = None if subsets is None else subsets[0]
        plan_c = jax.jit(self._keyed_plan).lower(keys[0], sub0).compile()
        k_step, plans = jax.eval_shape(self._keyed_plan, keys[0], sub0)
        steps = [jnp.asarray(i, jnp.int32) for i in range(self.num_steps)]
        step_c = (
            jax.jit(self._indexed_step, donate_argnums=(0,))
            .lower(first, arrays, plans, steps[0], k_step)
            .compile()
        )

        def compiled(states, arrays, keys, subsets=None):
            num = jax.tree.leaves(states)[0].shape[0]
            outs, hists = [], []
            for r in range(num):
                state = jax.tree.map(lambda x, r=r: x[r], states)
                sub = None if subsets is None else subsets[r]
                k_step, plans = plan_c(keys[r], sub)
                history = []
                for s in steps:
                    state, metrics = step_c(state, arrays, plans, s, k_step)
                    history.append(metrics)
                outs.append(state)
                hists.append(jax.tree.map(lambda *m: jnp.stack(m), *history))
            stack = lambda *xs: jnp.stack(xs)  # noqa: E731
            return jax.tree.map(stack, *outs), jax.tree.map(stack, *hists)

        return compiled

    def compile_replicas(self, states, arrays, keys, subsets=None):
        """Compiles :meth:`replica_epoch` (once); adds to ``compile_time``."""
        if "replicas" not in self._compiled:
            self._compiled["replicas"] = self._build(
                True, states, arrays, keys, subsets
            )
        return self._compiled["replicas"]

    def replica_epoch(self, states, arrays, keys, subsets=None):
        """One epoch for every replica: ``vmap`` of the epoch over axis 0 of
        ``states``, ``keys`` ``[K]`` and ``subsets`` ``[K, n_driver]`` (bool).
        Metrics come back as ``[K, num_steps]``."""
        return self.compile_replicas(states, arrays, keys, subsets)(
            states, arrays, keys, subsets
        )

    def compile(self, state, arrays, key, subset=None):
        """Compiles the epoch (once); records ``compile_time`` in seconds."""
        if "single" not in self._compiled:
            self._compiled["single"] = self._build(False, state, arrays, key, subset)
        return self._compiled["single"]

    def __call__(self, state, arrays, key, subset=None):
        """One epoch; ``subset`` (bool ``[n_driver]``) restricts the driver set
        to its True entries (the others fill padded, masked slots only)."""
        return self.compile(state, arrays, key, subset)(state, arrays, key, subset)


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
    batch_size: int,
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
      batch_size: batch size for every set.
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
        raise TypeError(f"`method` must be a methods.Method, got {type(method).__name__}.")
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError("`variables` must be Flax variables with a 'params' collection.")
    arrays, sizes = _host_arrays(data, num_classes or _num_classes_of(variables))
    subset = _include_mask(include, sizes, method.driver)
    steps = None
    if subset is not None:
        bs = _batch_sizes(batch_size, sizes)[method.driver]
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
    )
    # The epoch donates its state: copy so the caller's arrays stay alive.
    state = runner.place(jax.tree.map(lambda x: jnp.array(x, copy=True), state))
    arrays = runner.place(arrays)
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
    return UnlearnResult(state, history, runner.compile_time, run_time)


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
    method = methods.finetune(models.make_apply_fn(model), tx=config.tx(steps))
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


def _train_cached(
    kind: str,
    model,
    train_set: Mapping[str, np.ndarray],
    data_hash: str,
    config: TrainConfig,
    *,
    seed: int,
    cache_dir: str | None,
    mesh: Mesh | None,
    progress: bool | str,
) -> tuple[Any, dict[str, Any]]:
    key = jax.random.key(seed)
    k_init, k_fit = jax.random.split(key)
    example = np.asarray(train_set["image"][:1], np.float32)
    manifest = {
        "kind": kind,
        "model": repr(model),
        "data": data_hash,
        "input_shape": list(example.shape[1:]),
        "config": dataclasses.asdict(config),
        "seed": seed,
        "versions": cache.versions(),
        "engine": ENGINE_VERSION,
    }
    like = jax.eval_shape(lambda k: models.init(model, k, example), k_init)
    info: dict[str, Any] = {"manifest": manifest, "hash": cache.manifest_hash(manifest)}
    if cache_dir is not None:
        cached = cache.load(cache_dir, manifest, like=like)
        if cached is not None:
            saved = cache.load_info(cache_dir, manifest)
            # times of the run that built the entry (so reports stay meaningful)
            info.update(
                cache="hit",
                compile_time=float(saved.get("compile_time", 0.0)),
                run_time=float(saved.get("run_time", 0.0)),
                history=saved.get("history", []),
            )
            return jax.tree.map(jnp.asarray, cached), info
    variables = models.init(model, k_init, example)
    result = fit(
        model, variables, train_set, config, key=k_fit, mesh=mesh, progress=progress
    )
    variables = jax.device_get(result.variables)
    if cache_dir is not None:
        cache.save(
            cache_dir,
            manifest,
            variables,
            info={
                "compile_time": result.compile_time,
                "run_time": result.run_time,
                "history": result.history,
            },
        )
    info.update(
        cache="miss" if cache_dir is not None else "off",
        compile_time=result.compile_time,
        run_time=result.run_time,
        history=result.history,
    )
    return variables, info


def train_original(
    model,
    split: data_lib.UnlearningData,
    config: TrainConfig,
    *,
    seed: int = 0,
    cache_dir: str | None = None,
    mesh: Mesh | None = None,
    progress: bool | str = False,
) -> tuple[Any, dict[str, Any]]:
    """Trains (or loads from cache) the original model on retain ∪ forget.

    The cache key hashes the model, the split's index hashes, the config, the
    seed and package versions; a corrupted entry is rebuilt.

    Returns:
      ``(variables, info)``; ``info`` holds the manifest, its hash, whether the
      cache hit, compile and run times and the training history.
    """
    data_hash = cache.manifest_hash(
        {k: split.hashes[k] for k in ("dataset", "retain", "forget")}
    )
    return _train_cached(
        "original",
        model,
        split.train,
        data_hash,
        config,
        seed=seed,
        cache_dir=cache_dir,
        mesh=mesh,
        progress=progress or False,
    )


def retrain(
    model,
    split: data_lib.UnlearningData,
    config: TrainConfig,
    *,
    seed: int = 0,
    cache_dir: str | None = None,
    mesh: Mesh | None = None,
    progress: bool | str = False,
) -> tuple[Any, dict[str, Any]]:
    """Trains (or loads) the exact-unlearning oracle: a fresh model on retain only.

    Same recipe and code path as :func:`train_original`, with a fresh init.
    """
    data_hash = cache.manifest_hash({k: split.hashes[k] for k in ("dataset", "retain")})
    return _train_cached(
        "retrain",
        model,
        split.retain,
        data_hash,
        config,
        seed=seed,
        cache_dir=cache_dir,
        mesh=mesh,
        progress=progress or False,
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
    replicas are sharded over devices.

    Returns:
      An :class:`UnlearnResult` whose ``state`` and ``history`` entries have a
      leading replica axis (history values are lists of K floats).
    """
    arrays, sizes = _host_arrays(data)
    runner = EpochRunner(method, sizes, batch_size, mesh)
    num = keys.shape[0]
    hp = None
    if hparams is not None:
        hp = {
            k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (num,))
            for k, v in hparams.items()
        }
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    total = epochs * runner.num_steps
    states = jax.vmap(
        lambda v, k, h: method.init(v, key=k, hparams=h, num_steps=total),
        in_axes=(0, 0, None if hp is None else 0),
    )(variables, init_keys, hp)
    states = runner.place_replicas(
        jax.tree.map(lambda x: jnp.array(x, copy=True), states)
    )
    arrays = runner.place(arrays)
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
            {k: np.asarray(v).mean(axis=1).tolist() for k, v in metrics.items()}
        )
    return UnlearnResult(states, history, runner.compile_time, run_time)


@dataclasses.dataclass
class ShadowResult:
    """Output of :func:`train_shadow_models` (host numpy arrays).

    Attributes:
      inclusion: ``[K, N]`` bool, example ``j`` was in model ``k``'s train set.
      logits: ``{set name: [K, n, num_classes]}`` eval-mode logits of every
        model on every scored set (the training pool is scored as ``"train"``).
      compile_time: seconds compiling (training epoch and scoring).
      run_time: seconds training and scoring, compilation excluded.
      cache: ``"hit"``, ``"miss"`` or ``"off"``.
      hash: the manifest hash keying the cache entry.
      variables: the stacked final variables if ``keep_variables=True``.
    """

    inclusion: np.ndarray
    logits: dict[str, np.ndarray]
    compile_time: float
    run_time: float
    cache: str
    hash: str
    variables: Any = None


def _arrays_hash(sets: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(sets):
        for k in ("image", "label"):
            a = np.ascontiguousarray(sets[name][k])
            h.update(f"{name}/{k}/{a.dtype}/{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def train_models(
    model,
    train_set: Mapping[str, np.ndarray],
    config: TrainConfig,
    *,
    inclusion: np.ndarray,
    seed: int = 0,
    score_sets: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    mesh: Mesh | None = None,
    cache_dir: str | None = None,
    progress: bool | str = False,
    keep_variables: bool = False,
) -> ShadowResult:
    """Trains K models on K subsets of ``train_set`` as ONE vmapped program.

    Model ``k`` is initialised from its own key and trained with ``config`` on
    the examples where ``inclusion[k]`` is True, with its own shuffling; every
    model takes the same number of steps per epoch (enough for the largest
    subset; shorter subsets are padded and masked). Only eval-mode logits on the
    scored sets are kept (``keep_variables=True`` also returns the weights).
    With a ``"replica"`` mesh the model axis is sharded over devices.

    This is the primitive behind shadow models (LiRA), shadow-retrained models
    (U-LiRA: every row of ``inclusion`` is the retain mask) and reference
    models (RMIA). Results are cached by a manifest hash of the model, data,
    inclusion masks, recipe, seed and versions.

    Args:
      model: a ``jaxunlearn.models`` model.
      train_set: ``{"image", "label"}`` numpy arrays, the training pool.
      config: the training recipe (``config.batch_size`` per model).
      inclusion: ``[K, N]`` bool membership masks.
      seed: base seed; model ``k`` uses ``fold_in(key(seed), k)``.
      score_sets: extra ``{name: {"image", "label"}}`` sets to score.
      mesh: optional ``make_mesh(axis="replica")``; K must divide evenly.
      cache_dir: cache directory, or None.
      progress: show a tqdm bar.
      keep_variables: also return the stacked variables (not cached).

    Returns:
      A :class:`ShadowResult`.
    """
    inclusion = np.asarray(inclusion)
    images = np.asarray(train_set["image"], np.float32)
    labels = np.asarray(train_set["label"], np.int32)
    if inclusion.dtype != bool or inclusion.ndim != 2:
        raise ValueError(
            f"inclusion must be a bool [K, N] array, got {inclusion.dtype}"
            f" {inclusion.shape}."
        )
    if inclusion.shape[1] != len(labels):
        raise ValueError(
            f"inclusion has {inclusion.shape[1]} columns but train_set has"
            f" {len(labels)} examples."
        )
    counts = inclusion.sum(axis=1)
    if counts.min() < 1:
        raise ValueError("inclusion: every model needs at least one example.")
    num_models = inclusion.shape[0]
    if mesh is not None and "replica" in mesh.shape:
        if num_models % mesh.shape["replica"]:
            raise ValueError(
                f"{num_models} models do not divide over"
                f" {mesh.shape['replica']} devices."
            )
    sets = {"train": {"image": images, "label": labels}}
    for name, part in (score_sets or {}).items():
        sets[name] = {
            "image": np.asarray(part["image"], np.float32),
            "label": np.asarray(part["label"], np.int32),
        }
    manifest = {
        "kind": "models",
        "model": repr(model),
        "data": _arrays_hash(sets),
        "inclusion": cache.manifest_hash({"m": np.packbits(inclusion).tolist()}),
        "num_models": num_models,
        "config": dataclasses.asdict(config),
        "seed": seed,
        "versions": cache.versions(),
        "engine": ENGINE_VERSION,
    }
    key_hash = cache.manifest_hash(manifest)
    if cache_dir is not None and not keep_variables:
        hit = cache.load(cache_dir, manifest)
        if hit is not None:
            return ShadowResult(
                inclusion=np.asarray(hit["inclusion"], bool),
                logits={k: np.asarray(v) for k, v in hit["logits"].items()},
                compile_time=0.0,
                run_time=0.0,
                cache="hit",
                hash=key_hash,
            )

    apply_fn = models.make_apply_fn(model)
    steps = data_lib.num_batches(int(counts.max()), config.batch_size)
    method = methods.finetune(apply_fn, tx=config.tx(steps))
    runner = EpochRunner(
        method, {"retain": len(labels)}, config.batch_size, mesh, driver_steps=steps
    )
    base = jax.random.key(seed)
    keys = jax.vmap(lambda k: jax.random.fold_in(base, k))(jnp.arange(num_models))
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    example = images[:1]
    variables = jax.vmap(lambda k: models.init(model, k, example))(init_keys)
    states = runner.place_replicas(jax.vmap(lambda v: method.init(v))(variables))
    subsets = runner.place_replicas(jnp.asarray(inclusion))
    arrays = runner.place({"retain": sets["train"]})
    bar = _progress(
        config.epochs,
        progress if isinstance(progress, str) else "models",
        bool(progress),
    )
    epoch_keys = [
        runner.place_replicas(
            jax.vmap(lambda k, e=epoch: jax.random.fold_in(k, e + 1))(keys)
        )
        for epoch in range(config.epochs)
    ]
    if config.epochs:
        runner.compile_replicas(states, arrays, epoch_keys[0], subsets)
    # Epochs are dispatched back to back; the host waits only at the end (and
    # per epoch when a progress bar is shown).
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        states, metrics = runner.replica_epoch(
            states, arrays, epoch_keys[epoch], subsets
        )
        if bar is not None:
            bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.4f}")
            bar.update(1)
    jax.block_until_ready(states)
    run_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    t0 = time.perf_counter()
    if runner.resolved_mode == "sequential":
        # CPU + convolutions: score model by model (see EpochRunner).
        logits, score_compile = _score_each(apply_fn, states.variables, sets), 0.0
    else:
        logits, score_compile = _score_vmapped(apply_fn, states.variables, sets)
    run_time += time.perf_counter() - t0 - score_compile
    result = ShadowResult(
        inclusion=inclusion,
        logits=logits,
        compile_time=runner.compile_time + score_compile,
        run_time=run_time,
        cache="miss" if cache_dir is not None else "off",
        hash=key_hash,
        variables=jax.device_get(states.variables) if keep_variables else None,
    )
    if cache_dir is not None and not keep_variables:
        cache.save(cache_dir, manifest, {"inclusion": inclusion, "logits": logits})
    return result


def _score_each(apply_fn, stacked_variables, sets):
    """``{set: [K, n, C]}`` eval logits, one model at a time."""
    num_models = jax.tree.leaves(stacked_variables)[0].shape[0]
    return {
        name: np.stack(
            [
                predict(
                    apply_fn,
                    jax.tree.map(lambda x, k=k: x[k], stacked_variables),
                    part["image"],
                )
                for k in range(num_models)
            ]
        )
        for name, part in sets.items()
    }


def _score_vmapped(apply_fn, stacked_variables, sets):
    """``({set: [K, n, C]}, compile seconds)``: all models as one program."""
    num_models = jax.tree.leaves(stacked_variables)[0].shape[0]
    score_fn = jax.jit(
        jax.vmap(
            lambda v, x: jax.lax.map(lambda b: apply_fn(v, b, train=False)[0], x),
            in_axes=(0, None),
        )
    )
    logits, score_compile = {}, 0.0
    for name, part in sets.items():
        n = len(part["label"])
        stacked = data_lib.padded_batches({"image": part["image"]}, min(512, n))[
            "image"
        ]
        c0 = time.perf_counter()
        compiled = score_fn.lower(stacked_variables, stacked).compile()
        score_compile += time.perf_counter() - c0
        out = np.asarray(compiled(stacked_variables, stacked))
        logits[name] = out.reshape(num_models, -1, out.shape[-1])[:, :n]
    return logits, score_compile


def train_shadow_models(
    model,
    train_set: Mapping[str, np.ndarray],
    config: TrainConfig,
    *,
    num_models: int,
    seed: int = 0,
    p_in: float = 0.5,
    **kwargs: Any,
) -> ShadowResult:
    """LiRA-style shadow models: each example is in each model's training set
    independently with probability ``p_in`` (seeded), then :func:`train_models`.

    Examples:
      >>> from jaxunlearn import data, models, train
      >>> ds = data.load("digits")
      >>> pool = {k: v[:200] for k, v in ds["train"].items()}
      >>> r = train.train_shadow_models(
      ...     models.get_model("mlp", 10, hidden=(16,)), pool,
      ...     train.TrainConfig(epochs=2), num_models=4)
      >>> r.logits["train"].shape, r.inclusion.shape
      ((4, 200, 10), (4, 200))
    """
    if not isinstance(num_models, int) or num_models < 1:
        raise ValueError(f"num_models must be a positive int, got {num_models!r}.")
    if not 0.0 < p_in < 1.0:
        raise ValueError(f"p_in must be in (0, 1), got {p_in!r}.")
    n = len(train_set["label"])
    rng = np.random.default_rng(seed)
    inclusion = rng.random((num_models, n)) < p_in
    inclusion[inclusion.sum(1) == 0, 0] = True  # never an empty model
    return train_models(
        model, train_set, config, inclusion=inclusion, seed=seed, **kwargs
    )


@dataclasses.dataclass
class ULiraShadows:
    """Shadow ensembles for U-LiRA, scored on the forget set.

    Attributes:
      unlearned_logits: ``[K, n_forget, C]`` logits of K models trained on
        retain ∪ forget and then unlearned with the method under test.
      retrained_logits: ``[K, n_forget, C]`` logits of K models trained on
        retain only.
      compile_time: seconds compiling, all three ensembles.
      run_time: seconds training / unlearning / scoring, compilation excluded.
    """

    unlearned_logits: np.ndarray
    retrained_logits: np.ndarray
    compile_time: float
    run_time: float


def ulira_shadows(
    model,
    split: data_lib.UnlearningData,
    method: methods.Method,
    config: TrainConfig,
    *,
    num_models: int,
    unlearn_epochs: int,
    unlearn_batch_size: int,
    seed: int = 0,
    mesh: Mesh | None = None,
    cache_dir: str | None = None,
) -> ULiraShadows:
    """Builds the shadow-unlearned and shadow-retrained ensembles of U-LiRA.

    Three vmapped programs: K "original" models on retain ∪ forget
    (:func:`train_models`), the method applied to all K at once
    (:func:`unlearn_replicas`), and K models on retain only. Seeds differ from
    the target's (pass a ``seed`` the target did not use). Score the target
    with ``eval.ulira(phi_target, phi(unlearned_logits), phi(retrained_logits))``.
    """
    train_set = split.train
    n_retain = len(split.retain["label"])
    n = len(train_set["label"])
    everything = np.ones((num_models, n), bool)
    retain_only = np.zeros((num_models, n), bool)
    retain_only[:, :n_retain] = True  # split.train lists retain first
    forget = {"forget": split.forget}
    common = dict(seed=seed, mesh=mesh, score_sets=forget)
    originals = train_models(
        model, train_set, config, inclusion=everything, keep_variables=True, **common
    )
    retrained = train_models(
        model,
        train_set,
        config,
        inclusion=retain_only,
        cache_dir=cache_dir,
        **{**common, "seed": seed + 1},
    )
    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.key(seed + 2), k))(
        jnp.arange(num_models)
    )
    unlearned = unlearn_replicas(
        method,
        originals.variables,
        split,
        epochs=unlearn_epochs,
        batch_size=unlearn_batch_size,
        keys=keys,
        mesh=mesh if mesh is not None and "replica" in mesh.shape else None,
    )
    apply_fn = models.make_apply_fn(model)
    score = jax.jit(
        jax.vmap(lambda v, x: apply_fn(v, x, train=False)[0], in_axes=(0, None))
    )
    t0 = time.perf_counter()
    compiled = score.lower(unlearned.state.variables, split.forget["image"]).compile()
    t1 = time.perf_counter()
    logits = np.asarray(compiled(unlearned.state.variables, split.forget["image"]))
    t2 = time.perf_counter()
    return ULiraShadows(
        unlearned_logits=logits,
        retrained_logits=retrained.logits["forget"],
        compile_time=originals.compile_time
        + retrained.compile_time
        + unlearned.compile_time
        + (t1 - t0),
        run_time=originals.run_time
        + retrained.run_time
        + unlearned.run_time
        + (t2 - t1),
    )


def predict(
    apply_fn,
    variables: Any,
    images: np.ndarray,
    *,
    batch_size: int = 512,
    features: bool = False,
) -> np.ndarray:
    """Logits of ``images`` in eval mode, in fixed-shape batches (one compile).

    Args:
      features: return the head's input (penultimate features) instead.

    Returns:
      numpy ``[N, num_classes]`` float32 (``[N, D]`` with ``features``).
    """
    images = np.asarray(images, np.float32)
    n = len(images)
    if n == 0:
        raise ValueError("images is empty.")
    bs = min(batch_size, n)
    batches = data_lib.padded_batches({"image": images}, bs)["image"]
    # One compiled batch called from a host loop rather than lax.map: XLA:CPU
    # runs convolutions inside a loop body many times slower (see EpochRunner).
    out = [_predict_batch(apply_fn, features, variables, b) for b in batches]
    logits = np.concatenate([np.asarray(o) for o in out])
    return logits[:n]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict_batch(apply_fn, features, variables, batch):
    if features:
        return apply_fn(variables, batch, train=False, return_features=True)[0][1]
    return apply_fn(variables, batch, train=False)[0]
