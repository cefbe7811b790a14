"""Shadow ensembles: K models trained on K inclusion masks as one program
(LiRA shadows, U-LiRA shadow-retrained / shadow-unlearned models)."""

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxunlearn import cache, methods, models
from jaxunlearn import data as data_lib
from jaxunlearn.train._engine import (
    ENGINE_VERSION,
    EpochRunner,
    cpu_compiler_options,
    predict,
    to_host,
)
from jaxunlearn.train._loops import (
    TrainConfig,
    _ById,
    _cached_runner,
    _progress,
    _supervised_method,
    unlearn_replicas,
)


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
    method = _supervised_method(model, config, steps)
    runner = EpochRunner(
        method, {"retain": len(labels)}, config.batch_size, mesh, driver_steps=steps
    )
    # Keys, initialisation and every epoch's keys: one compiled program.
    c0 = time.perf_counter()
    base = jax.random.key(seed)
    init = _replica_init.lower(
        model, _ById(method), num_models, config.epochs, base, images[:1]
    ).compile(compiler_options=cpu_compiler_options())
    init_compile = time.perf_counter() - c0
    states, epoch_keys = init(base, images[:1])
    states = runner.place_replicas(states)
    epoch_keys = [runner.place_replicas(k) for k in epoch_keys]
    subsets = runner.place_replicas(inclusion)
    arrays = runner.place({"retain": sets["train"]})
    runner = _cached_runner(runner, "replicas", states, arrays, epoch_keys[:1], subsets)
    compile_start = runner.compile_time - init_compile
    bar = _progress(
        config.epochs,
        progress if isinstance(progress, str) else "models",
        bool(progress),
    )
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
        compile_time=runner.compile_time - compile_start + score_compile,
        run_time=run_time,
        cache="miss" if cache_dir is not None else "off",
        hash=key_hash,
        variables=jax.device_get(states.variables) if keep_variables else None,
    )
    if cache_dir is not None and not keep_variables:
        cache.save(cache_dir, manifest, {"inclusion": inclusion, "logits": logits})
    return result


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _replica_init(model, method, num_models: int, epochs: int, base, example):
    """States of ``num_models`` models and their keys for every epoch.

    Model ``k``'s key is ``fold_in(base, k)``; it is initialised from
    ``fold_in(key_k, 0)`` and epoch ``e`` shuffles with ``fold_in(key_k, e + 1)``.
    Op by op this is dozens of small programs; here it is one. ``method`` is
    an ``_ById`` handle.
    """
    keys = jax.vmap(lambda k: jax.random.fold_in(base, k))(jnp.arange(num_models))
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    variables = jax.vmap(lambda k: models.init(model, k, example))(init_keys)
    states = jax.vmap(lambda v: method.obj.init(v))(variables)
    # One fold_in in a loop rather than one per epoch: each is an unrolled
    # threefry hash that XLA compiles anew.
    stacked = jax.lax.map(
        lambda e: jax.vmap(lambda k: jax.random.fold_in(k, e + 1))(keys),
        jnp.arange(epochs),
    )
    return states, tuple(stacked[e] for e in range(epochs))


@jax.jit
def _take(tree, k):
    """Replica ``k`` of a stacked pytree (one program for every leaf)."""
    return jax.tree.map(lambda x: x[k], tree)


def _score_each(apply_fn, stacked_variables, sets):
    """``{set: [K, n, C]}`` eval logits, one model at a time."""
    num_models = jax.tree.leaves(stacked_variables)[0].shape[0]
    return {
        name: np.stack(
            [
                predict(apply_fn, _take(stacked_variables, k), part["image"])
                for k in range(num_models)
            ]
        )
        for name, part in sets.items()
    }


@functools.partial(jax.jit, static_argnums=0)
def _score_batches(apply_fn, stacked_variables, batches):
    """``[K, steps, batch, C]`` eval logits of K models on fixed batches."""
    return jax.vmap(
        lambda v, x: jax.lax.map(lambda b: apply_fn(v, b, train=False)[0], x),
        in_axes=(0, None),
    )(stacked_variables, batches)


def _score_vmapped(apply_fn, stacked_variables, sets):
    """``({set: [K, n, C]}, compile seconds)``: all models as one program."""
    num_models = jax.tree.leaves(stacked_variables)[0].shape[0]
    logits, score_compile = {}, 0.0
    for name, part in sets.items():
        n = len(part["label"])
        stacked = data_lib.padded_batches({"image": part["image"]}, min(512, n))[
            "image"
        ]
        c0 = time.perf_counter()
        # Compiled once per shape (a cache hit on a later call).
        compiled = _score_batches.lower(apply_fn, stacked_variables, stacked).compile()
        score_compile += time.perf_counter() - c0
        out = to_host(compiled(stacked_variables, stacked))
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


@functools.partial(jax.jit, static_argnums=1)
def _model_keys(base, num_models: int):
    """``[fold_in(base, k) for k < num_models]`` as one program."""
    return jax.vmap(lambda k: jax.random.fold_in(base, k))(jnp.arange(num_models))


@functools.partial(jax.jit, static_argnums=0)
def _score_all(apply_fn, stacked_variables, images):
    """``[K, n, C]`` eval logits of K models on ``images`` in one batch."""
    return jax.vmap(lambda v, x: apply_fn(v, x, train=False)[0], in_axes=(0, None))(
        stacked_variables, images
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
    keys = _model_keys(jax.random.key(seed + 2), num_models)
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
    t0 = time.perf_counter()
    compiled = _score_all.lower(
        apply_fn, unlearned.state.variables, split.forget["image"]
    ).compile()
    t1 = time.perf_counter()
    logits = to_host(compiled(unlearned.state.variables, split.forget["image"]))
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
