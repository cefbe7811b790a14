"""The compiled-epoch engine: the one jit site of the library.

A method's ``step`` runs over an epoch of fixed-shape, masked batches gathered
on device from index plans (``lax.scan``, a device-side step loop, or replicas
one after another), optionally over a mesh; plus input validation and batched
prediction.
"""

import functools
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxunlearn import data as data_lib
from jaxunlearn import methods

AXES = ("replica", "data")
"""Mesh axis names, outermost first: ``"replica"`` shards a vmapped replica axis
(shadow models, seeds, sweeps), ``"data"`` shards each batch."""


CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
"""XLA options of every program the engine compiles on a CPU: LLVM's
optimisation level 1 instead of the default 3. Measured on the 2-core CPU
(load ~6, one interleaved run): a 16-model MLP(256, 256) epoch compiles in
2.3 s instead of 3.3 s and a CNN epoch in 2.5 s instead of 4.9 s, and both
run no slower. Results equal the default level's up to float rounding (an
MLP epoch: the same bits; a BatchNorm CNN epoch: at most 7e-9 absolute;
tests/test_compile_counts.py). Level 0 compiles faster still but runs 2-5x
slower. Other backends keep their defaults."""


def cpu_compiler_options() -> dict[str, int] | None:
    """:data:`CPU_COMPILER_OPTIONS` on the CPU backend, else None."""
    return CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None


CPU_CONV_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""Added on CPU for programs with convolutions: no YNNPACK fusions. This
jaxlib routes convolutions, dots and reductions through YNNPACK by default;
without it XLA:CPU's own convolution kernels run the CNN fine-tune epoch 16%
faster (3.24 s against 3.87 s, 2,048 Fashion-MNIST images, batch 128, quiet
2-core CPU) while an MLP epoch gets slightly slower (0.22 s against 0.20 s),
hence only for convolutional programs. An XLA without the option compiles
with the other options (``compile_lowered``)."""


def compile_lowered(lowered, text: str | None = None):
    """``lowered.compile()`` with the engine's backend options.

    On CPU: :data:`CPU_COMPILER_OPTIONS`, plus :data:`CPU_CONV_OPTIONS` when
    the program has a convolution (dropped if this XLA does not know them).
    ``text``: ``lowered.as_text()`` when the caller already has it.
    """
    options = cpu_compiler_options()
    if options is None:
        return lowered.compile()
    text = lowered.as_text() if text is None else text
    if "stablehlo.convolution" in text:
        try:
            return lowered.compile(compiler_options={**options, **CPU_CONV_OPTIONS})
        except Exception:  # noqa: BLE001 - an XLA without the experimental flag
            pass
    return lowered.compile(compiler_options=options)


def to_host(x: Any) -> np.ndarray:
    """A (possibly sharded) array as numpy, whole, on every process.

    On one process this is ``np.asarray``. When a mesh spans several
    processes (hosts), an array sharded over an axis that crosses them is only
    partly addressable by each; it is gathered with
    ``multihost_utils.process_allgather`` so every host reads the same value.
    """
    if jax.process_count() > 1 and isinstance(x, jax.Array):
        if not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


_DIMS = re.compile(r"dim_numbers=(\[[^\]]*\])x(\[[^\]]*\])->(\[[^\]]*\])")
_GROUPS = re.compile(r"(?:batch|feature)_group_count=(\d+)")
_CANONICAL_DIMS = ("[b,0,1,f]", "[0,1,i,o]", "[b,0,1,f]")


def slow_in_loops(hlo_text: str) -> bool:
    """Whether a program has convolutions that XLA:CPU runs slowly in a loop.

    Inside a while loop (``lax.scan``) XLA:CPU runs a convolution fast only in
    the standard layout, NHWC x HWIO -> NHWC, ungrouped. Others (the gradient
    convolutions of ``lax.conv_general_dilated``; vmapped convolutions, which
    are grouped) run as naive loops there, 30-80x slower (measured in
    ``experiments/results/bench_conv_cpu.json``). The models' convolution on
    CPU (``models._layers.canonical_conv``) keeps every stride-1 convolution
    and its gradients in the standard layout, so such epochs can be scanned.
    """
    for line in hlo_text.splitlines():
        if "stablehlo.convolution" not in line:
            continue
        compact = line.replace(" ", "")
        dims = _DIMS.search(compact)
        groups = [int(g) for g in _GROUPS.findall(compact)]
        if (
            dims is None
            or dims.groups() != _CANONICAL_DIMS
            or any(g != 1 for g in groups)
        ):
            return True
    return False


def make_mesh(
    num_devices: int | None = None,
    axis: str = "data",
    *,
    shape: Mapping[str, int] | None = None,
) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices, or a 2-D ``replica x data`` mesh.

    Devices are taken in ``jax.devices()`` order, which is process-major on
    several hosts, so the inner ``"data"`` axis stays within a host when its
    size divides the devices per host: the gradient all-reduce of data
    parallelism then never crosses hosts, and replicas never communicate.

    Args:
      num_devices: how many devices (default: all).
      axis: for a 1-D mesh, ``"data"`` (batch sharded, state replicated) or
        ``"replica"`` (vmapped models sharded, data replicated).
      shape: ``{"replica": r, "data": d}`` for a 2-D mesh over ``r * d``
        devices (replaces ``axis``): replicas sharded over ``"replica"``, each
        replica's batch over ``"data"``. One size may be ``-1``, inferred from
        ``num_devices`` (default: all devices).

    Examples:
      >>> from jaxunlearn import train
      >>> dict(train.make_mesh(shape={"replica": 2, "data": -1}).shape)
      {'replica': 2, 'data': 2}
    """
    devices = jax.devices()
    if num_devices is not None and not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices={num_devices!r} but {len(devices)} devices are available."
        )
    if shape is None:
        if axis not in AXES:
            raise ValueError(f"axis must be 'data' or 'replica', got {axis!r}.")
        n = len(devices) if num_devices is None else num_devices
        return Mesh(np.array(devices[:n]), (axis,))
    if not isinstance(shape, Mapping) or set(shape) != set(AXES):
        raise ValueError(
            f"shape must be a mapping {{'replica': r, 'data': d}}, got {shape!r}."
        )
    sizes = [shape[a] for a in AXES]
    for a, s in zip(AXES, sizes, strict=True):
        if (
            isinstance(s, bool)
            or not isinstance(s, int | np.integer)
            or (s < 1 and s != -1)
        ):
            raise ValueError(f"shape[{a!r}] must be a positive int or -1, got {s!r}.")
    if sizes.count(-1) > 1:
        raise ValueError(f"shape may infer one size (-1), got {shape!r}.")
    if -1 in sizes:
        total = len(devices) if num_devices is None else num_devices
        known = -int(np.prod(sizes))
        if total % known:
            raise ValueError(
                f"shape={shape!r}: {total} devices do not divide by {known}."
            )
        sizes = [total // known if s == -1 else int(s) for s in sizes]
    n = int(np.prod(sizes))
    if n > len(devices) or (num_devices is not None and n != num_devices):
        raise ValueError(
            f"shape={shape!r} needs {n} devices but"
            f" {len(devices) if num_devices is None else num_devices} were given"
            f" ({len(devices)} available)."
        )
    return Mesh(np.array(devices[:n]).reshape(sizes), AXES)


# Launchers' process-count variables (Slurm, Open MPI: jax.distributed detects
# the rest of their settings itself).
_PROCESS_COUNT_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs: Any,
) -> tuple[int, int]:
    """Joins a multi-host run; a no-op for a single process.

    Wraps ``jax.distributed.initialize`` and must run before any other JAX
    call. After it, ``jax.devices()`` lists every host's devices, so
    :func:`make_mesh` spans all hosts and the rest of the code is unchanged.
    Arguments left as None are read from the environment:
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``,
    or a launcher's (Slurm, Open MPI, TPU pods) through JAX's cluster
    detection. Nothing is done when one process is asked for or detected
    (``num_processes=1``, or no coordinator address and no process count
    above 1 anywhere), or when JAX is already initialised.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: total number of processes (one per host, usually).
      process_id: this process's index in ``[0, num_processes)``.
      **kwargs: passed to ``jax.distributed.initialize`` (e.g.
        ``local_device_ids``).

    Returns:
      ``(jax.process_index(), jax.process_count())``.
    """
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if num_processes is None:
        counts = [os.environ.get(v) for v in _PROCESS_COUNT_VARS]
        launched = max([int(c) for c in counts if c and c.isdigit()] or [1])
        explicit = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
        single = launched == 1 and not explicit
    else:
        single = num_processes == 1
    if not single and not jax.distributed.is_initialized():
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            **kwargs,
        )
    return jax.process_index(), jax.process_count()


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
            raise ValueError(
                f"data[{name!r}] must be a mapping with 'image' and 'label'."
            )
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


def _batch_sizes(
    batch_size, sizes: Mapping[str, int], driver: str | None = None
) -> dict[str, int]:
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
        default = out.get(driver) if driver is not None else None
        default = default or out.get("retain") or next(iter(out.values()), None)
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
    times slower per model) unless a ``"replica"`` mesh axis of size > 1
    shards the replicas.

    Args:
      method: the method to run.
      sizes: ``{set name: number of examples}`` (static shapes).
      batch_size: examples per set per step: an int for every set, or
        ``{set name: int}`` (each set has its own batch size and its own
        shuffling stream; a set missing from the mapping uses the driver's).
      mesh: optional mesh (:func:`make_mesh`) with a ``"data"`` axis
        (batches sharded), a ``"replica"`` axis (replicas sharded, for
        ``replica_epoch``) or both (each replica's batch sharded
        ``P("replica", "data")``).
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
        self.batch_sizes = _batch_sizes(batch_size, sizes, method.driver)
        if mesh is not None and not set(mesh.axis_names) <= set(AXES):
            raise ValueError(
                f"mesh axes must be among {AXES} (see make_mesh), got"
                f" {mesh.axis_names}."
            )
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

    @property
    def _spmd_axis(self) -> str | None:
        # vmap's spmd_axis_name adds "replica" to every sharding constraint
        # inside (the batch's P("data") becomes P("replica", "data")).
        if self.mesh is not None and "replica" in self.mesh.shape:
            return "replica"
        return None

    def _replica_epoch(self, states, arrays, keys, subsets):
        in_axes = (0, None, 0, None if subsets is None else 0)
        return jax.vmap(self._epoch, in_axes=in_axes, spmd_axis_name=self._spmd_axis)(
            states, arrays, keys, subsets
        )

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
        self._check_replicas(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P("replica")))

    def _check_replicas(self, tree):
        num = jax.tree.leaves(tree)[0].shape[0]
        shards = 1 if self.mesh is None else self.mesh.shape.get("replica", 1)
        if num % shards:
            raise ValueError(
                f"{num} replicas (the leading axis of `keys`, `variables` or"
                f" `inclusion`) must be divisible by the mesh's replica axis"
                f" ({shards} devices)."
            )

    def _build(self, replicas: bool, state, arrays, key, subset):
        """Compiles the epoch for one or many replicas; returns a callable."""
        t0 = time.perf_counter()
        mode = self.mode
        if mode in ("auto", "scan"):
            epoch = self._replica_epoch if replicas else self._epoch
            lowered = jax.jit(epoch, donate_argnums=(0,)).lower(
                state, arrays, key, subset
            )
            text = lowered.as_text()
            if mode == "auto":
                slow = jax.default_backend() == "cpu" and slow_in_loops(text)
                sharded = self._spmd_axis and self.mesh.shape["replica"] > 1
                mode = "scan"
                if slow:
                    mode = "sequential" if replicas and not sharded else "loop"
        if mode == "sequential" and not replicas:
            mode = "loop"
        self.resolved_mode = mode
        if mode == "scan":
            compiled = compile_lowered(lowered, text)
        elif mode == "sequential":
            compiled = self._build_sequential(state, arrays, key, subset)
        else:
            plan_fn = self._keyed_plan
            step_fn = self._indexed_step
            if replicas:
                plan_fn = jax.vmap(plan_fn, in_axes=(0, None if subset is None else 0))
                step_fn = jax.vmap(
                    step_fn,
                    in_axes=(0, None, 0, None, 0),
                    spmd_axis_name=self._spmd_axis,
                )
            plan_c = compile_lowered(jax.jit(plan_fn).lower(key, subset))
            # Concrete plans (not shapes): the step compiles for the shardings
            # the plan program really returns (P("replica") on a replica mesh).
            k_step, plans = plan_c(key, subset)
            steps = [jnp.asarray(i, jnp.int32) for i in range(self.num_steps)]
            step_c = compile_lowered(
                jax.jit(step_fn, donate_argnums=(0,)).lower(
                    state, arrays, plans, steps[0], k_step
                )
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
        plan_c = compile_lowered(jax.jit(self._keyed_plan).lower(keys[0], sub0))
        k_step, plans = plan_c(keys[0], sub0)  # concrete: see the "loop" mode
        steps = [jnp.asarray(i, jnp.int32) for i in range(self.num_steps)]
        step_c = compile_lowered(
            jax.jit(self._indexed_step, donate_argnums=(0,)).lower(
                first, arrays, plans, steps[0], k_step
            )
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
            self._check_replicas(keys)
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
