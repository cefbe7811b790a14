"""Cached oracle models: the original (retain + forget) and the retrained
(retain only) model, keyed by a manifest hash."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxunlearn import cache, models
from jaxunlearn import data as data_lib
from jaxunlearn.train._engine import ENGINE_VERSION
from jaxunlearn.train._loops import TrainConfig, fit


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
