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
    "train_original",
    "unlearn",
]

make_optimizer = optim.sgd


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over the first ``num_devices`` devices."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"num_devices={num_devices!r} but {len(devices)} devices are available."
        )
    return Mesh(np.array(devices[:n]), ("data",))


def _as_sets(data: Any) -> dict[str, dict[str, np.ndarray]]:
    if isinstance(data, data_lib.UnlearningData):
        return {"retain": data.retain, "forget": data.forget}
    if isinstance(data, Mapping):
        return {k: dict(v) for k, v in data.items()}
    raise TypeError(
        f"data must be an UnlearningData or a mapping of sets, got {type(data)}."
    )


class EpochRunner:
    """Compiles one epoch of ``method.step`` under ``lax.scan``.

    An epoch is one pass over the method's driver set in batches of
    ``batch_size`` (last one padded and masked); every other set is cycled to
    the same number of steps. The compiled function is
    ``epoch(state, arrays, key) -> (state, metrics[num_steps])`` and donates
    the state.

    Args:
      method: the method to run.
      sizes: ``{set name: number of examples}`` (static shapes).
      batch_size: examples per set per step.
      mesh: optional mesh with a ``"data"`` axis; batches are sharded over it.
    """

    def __init__(
        self,
        method: methods.Method,
        sizes: Mapping[str, int],
        batch_size: int,
        mesh: Mesh | None = None,
    ):
        if method.driver not in sizes:
            raise ValueError(
                f"method runs over the {method.driver!r} set but data has only"
                f" {sorted(sizes)}."
            )
        for name, n in sizes.items():
            if n < 1:
                raise ValueError(f"the {name!r} set is empty.")
        if mesh is not None and batch_size % mesh.shape["data"]:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the mesh's data axis"
                f" ({mesh.shape['data']} devices)."
            )
        self.method = method
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.mesh = mesh
        self.num_steps = data_lib.num_batches(sizes[method.driver], batch_size)
        self._compiled = None
        self.compile_time = 0.0

    def _plan(self, key):
        plans = {}
        for i, (name, n) in enumerate(sorted(self.sizes.items())):
            k = jax.random.fold_in(key, i)
            if name == self.method.driver:
                plans[name] = data_lib.epoch_indices(k, n, self.batch_size)
            else:
                plans[name] = data_lib.cycle_indices(
                    k, n, self.batch_size, self.num_steps
                )
        return plans

    def _epoch(self, state, arrays, key):
        k_plan, k_step = jax.random.split(key)
        plans = self._plan(k_plan)
        batch_sharding = (
            None if self.mesh is None else NamedSharding(self.mesh, P("data"))
        )

        def body(state, xs):
            batch = {
                name: data_lib.gather(arrays[name], idx, mask)
                for name, (idx, mask) in xs.items()
            }
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            return self.method.step(state, batch, k_step)

        return jax.lax.scan(body, state, plans)

    def place(self, tree):
        """Puts a pytree on the device(s): replicated over the mesh if any."""
        if self.mesh is None:
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def compile(self, state, arrays, key):
        """Lowers and compiles the epoch; records ``compile_time`` in seconds."""
        if self._compiled is None:
            t0 = time.perf_counter()
            self._compiled = (
                jax.jit(self._epoch, donate_argnums=(0,))
                .lower(state, arrays, key)
                .compile()
            )
            self.compile_time = time.perf_counter() - t0
        return self._compiled

    def __call__(self, state, arrays, key):
        return self.compile(state, arrays, key)(state, arrays, key)


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
    callback: Callable[[int, dict[str, float]], None] | None = None,
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
      callback: called as ``callback(epoch, epoch_metrics)`` after each epoch.

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
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}.")
    sets = _as_sets(data)
    for name, s in sets.items():
        if len(s["image"]) != len(s["label"]):
            raise ValueError(
                f"data[{name!r}] has {len(s['image'])} images but"
                f" {len(s['label'])} labels."
            )
    arrays = {
        name: {
            "image": np.asarray(s["image"], np.float32),
            "label": np.asarray(s["label"], np.int32),
        }
        for name, s in sets.items()
    }
    sizes = {name: len(a["label"]) for name, a in arrays.items()}
    runner = EpochRunner(method, sizes, batch_size, mesh)
    k_init, k_epochs = jax.random.split(key)
    state = method.init(variables, key=k_init, hparams=hparams)
    # The epoch donates its state: copy so the caller's arrays stay alive.
    state = runner.place(jax.tree.map(lambda x: jnp.array(x, copy=True), state))
    arrays = runner.place(arrays)
    history: list[dict[str, float]] = []
    run_time = 0.0
    label = progress if isinstance(progress, str) else "unlearn"
    bar = _progress(epochs, label, bool(progress))
    for epoch in range(epochs):
        k = jax.random.fold_in(k_epochs, epoch)
        runner.compile(state, arrays, k)
        t0 = time.perf_counter()
        state, metrics = runner(state, arrays, k)
        metrics = jax.block_until_ready(metrics)
        run_time += time.perf_counter() - t0
        summary = {name: float(np.mean(v)) for name, v in metrics.items()}
        history.append(summary)
        if callback is not None:
            callback(epoch, summary)
        if bar is not None:
            bar.set_postfix(loss=f"{summary['loss']:.4f}")
            bar.update(1)
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
) -> UnlearnResult:
    """Supervised cross-entropy training of ``model`` from ``variables``."""
    n = len(train_set["label"])
    steps = data_lib.num_batches(n, config.batch_size)
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
    }
    like = jax.eval_shape(lambda k: models.init(model, k, example), k_init)
    info: dict[str, Any] = {"manifest": manifest, "hash": cache.manifest_hash(manifest)}
    if cache_dir is not None:
        cached = cache.load(cache_dir, manifest, like=like)
        if cached is not None:
            info.update(cache="hit", compile_time=0.0, run_time=0.0, history=[])
            return jax.tree.map(jnp.asarray, cached), info
    variables = models.init(model, k_init, example)
    result = fit(
        model, variables, train_set, config, key=k_fit, mesh=mesh, progress=progress
    )
    variables = jax.device_get(result.variables)
    if cache_dir is not None:
        cache.save(cache_dir, manifest, variables)
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


def predict(
    apply_fn, variables: Any, images: np.ndarray, *, batch_size: int = 512
) -> np.ndarray:
    """Logits of ``images`` in eval mode, in fixed-shape batches (one compile).

    Returns:
      numpy ``[N, num_classes]`` float32.
    """
    images = np.asarray(images, np.float32)
    n = len(images)
    if n == 0:
        raise ValueError("images is empty.")
    bs = min(batch_size, n)
    batches = data_lib.padded_batches({"image": images}, bs)
    logits = _predict_jit(apply_fn, variables, batches["image"])
    return np.asarray(logits).reshape(-1, logits.shape[-1])[:n]


@functools.partial(jax.jit, static_argnums=0)
def _predict_jit(apply_fn, variables, stacked):
    return jax.lax.map(lambda x: apply_fn(variables, x, train=False)[0], stacked)
