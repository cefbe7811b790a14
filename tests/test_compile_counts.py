"""Compile once per shape, and the persistent compilation cache.

Every XLA program JAX builds is counted with a listener on JAX's
backend-compile event (which also fires on a persistent-cache hit; hits are
counted separately). Shapes are chosen so that no other test in the same
worker has compiled these programs already.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxunlearn import cache, data, harness, methods, models, train

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations inside the block: ``counts["n"]``."""
    counts = {"n": 0}

    def listener(event, duration, **kwargs):
        del duration, kwargs
        if event == BACKEND_COMPILE:
            counts["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def pool(digits):
    # 157 examples and 7 hidden units: shapes no other test compiles.
    return {k: v[:157] for k, v in digits["train"].items()}


def _mlp():
    return models.get_model("mlp", 10, hidden=(7,))


CFG = train.TrainConfig(epochs=2, batch_size=32)


def test_shadow_ensemble_compiles_three_programs_then_none(pool):
    score = {"extra": {k: v[:11] for k, v in pool.items()}}
    kw = dict(num_models=3, score_sets=score)
    with count_compiles() as first:
        a = train.train_shadow_models(_mlp(), pool, CFG, seed=0, **kw)
    # At most 6: keys + initialisation + every epoch's keys (one program),
    # the vmapped epoch (one), scoring (one per scored set's shape: "train"
    # and "extra", two) and jax.random.key(seed) (lifting and seeding the
    # int: two tiny programs, compiled once per process, maybe by an earlier
    # test). Before compile-once this call built ~40 programs op by op.
    assert first["n"] <= 6, first["n"]
    with count_compiles() as again:
        b = train.train_shadow_models(_mlp(), pool, CFG, seed=0, **kw)
    assert again["n"] == 0
    np.testing.assert_array_equal(a.logits["train"], b.logits["train"])
    # Only cache look-ups (tracing hits, milliseconds) are left to time.
    assert b.compile_time < 0.2 * a.compile_time
    # Another seed (a new LiRA run) reuses every program as well.
    with count_compiles() as other_seed:
        train.train_shadow_models(_mlp(), pool, CFG, seed=1, **kw)
    assert other_seed["n"] == 0


def test_unlearn_compiles_the_epoch_once(digits):
    split = data.split(
        {
            "train": {k: v[:203] for k, v in digits["train"].items()},
            "test": digits["test"],
        },
        "class",
        forget_classes=3,
        seed=0,
    )
    model = _mlp()
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    m = methods.get("neggrad_plus", apply_fn=models.make_apply_fn(model))
    kw = dict(epochs=2, batch_size=48)
    with count_compiles() as first:
        a = train.unlearn(m, v, split, key=jax.random.key(1), **kw)
    # At most 8: the epoch, the state copy, the epoch keys (fold_in) and the
    # history mean (one program each), and the method's init run op by op
    # (zeros / broadcasts of the optimiser state and hparams: up to four,
    # compiled once per process). Before: the copy alone was one per leaf shape.
    assert first["n"] <= 8, first["n"]
    with count_compiles() as again:
        b = train.unlearn(m, v, split, key=jax.random.key(2), **kw)
    assert again["n"] == 0
    assert b.compile_time == 0.0 and a.compile_time > 0.0
    assert len(b.history) == 2


def test_fit_predict_and_replicas_compile_nothing_the_second_time(pool):
    model = _mlp()
    v = models.init(model, jax.random.key(0), pool["image"][:1])
    cfg = train.TrainConfig(epochs=1, batch_size=32)
    train.fit(model, v, pool, cfg, key=jax.random.key(0))  # fit builds its method
    with count_compiles() as again:
        fitted = train.fit(model, v, pool, cfg, key=jax.random.key(1))
    assert again["n"] == 0
    apply_fn = models.make_apply_fn(model)
    train.predict(apply_fn, fitted.variables, pool["image"], batch_size=50)
    with count_compiles() as again:
        train.predict(apply_fn, v, pool["image"], batch_size=50)
    assert again["n"] == 0

    keys = jax.random.split(jax.random.key(3), 2)
    stacked = jax.vmap(lambda k: models.init(model, k, pool["image"][:1]))(keys)
    m = methods.get("finetune", apply_fn=models.make_apply_fn(model))
    sets = {"retain": pool}
    kw = dict(epochs=1, batch_size=32, keys=keys, hparams={"learning_rate": 0.01})
    train.unlearn_replicas(m, stacked, sets, **kw)
    with count_compiles() as again:
        train.unlearn_replicas(m, stacked, sets, **kw)
    assert again["n"] == 0


def test_driver_compilation_cache_opt_outs(tmp_path, monkeypatch):
    """``--no-compilation-cache`` and the environment variable leave JAX's
    cache off (the default path is checked in a subprocess below)."""

    def run(cfg, workdir, log):
        del cfg, workdir, log
        return {"claims": [], "wall_time_s": 0.0}

    kw = dict(
        description="test",
        get_config=lambda name: object(),
        run=run,
        presets=("smoke",),
        workdir=str(tmp_path),
    )
    before = jax.config.jax_compilation_cache_dir
    harness.driver_main(["--no-compilation-cache"], **kw)
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.setenv(cache.NO_COMPILATION_CACHE_ENV, "1")
    assert cache.compilation_cache_disabled()
    harness.driver_main([], **kw)
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.setenv(cache.NO_COMPILATION_CACHE_ENV, "0")
    assert not cache.compilation_cache_disabled()


_JOB = textwrap.dedent(
    """
    import json, os, sys
    import jax
    from jaxunlearn import cache, data, models, train

    events = {"compiles": 0, "hits": 0}

    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            events["compiles"] += 1

    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            events["hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    if sys.argv[1] == "default":
        path = cache.enable_compilation_cache()  # $JAXUNLEARN_CACHE/xla
    else:
        path = cache.enable_compilation_cache(sys.argv[1])
    assert cache.enable_compilation_cache(path) == path  # idempotent
    assert jax.config.jax_compilation_cache_dir == path
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    pool = {k: v[:64] for k, v in data.load("digits")["train"].items()}
    cfg = train.TrainConfig(epochs=1, batch_size=32)
    train.train_shadow_models(
        models.get_model("mlp", 10, hidden=(5,)), pool, cfg, num_models=2
    )
    print(json.dumps({"path": path, "entries": len(os.listdir(path)), **events}))
    """
)


def _job(arg, env):
    out = subprocess.run(
        [sys.executable, "-c", _JOB, arg],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_compiles_from_the_persistent_cache(tmp_path):
    env = {
        **os.environ,
        cache.CACHE_ENV: str(tmp_path / "root"),
        # Faster compiles; part of the cache key, the same in both runs.
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    }
    env.pop(cache.NO_COMPILATION_CACHE_ENV, None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the test session's own cache
    cold = _job("default", env)
    assert cold["path"] == str(tmp_path / "root" / "xla")
    assert cold["hits"] == 0 and cold["compiles"] >= 3
    assert cold["entries"] >= 3  # every program is written, however small
    warm = _job(str(tmp_path / "root" / "xla"), env)
    # Every program of the second process comes from the disk cache.
    assert warm["hits"] == warm["compiles"] == cold["compiles"]


def test_initialisation_compiled_for_one_run_gives_the_same_bits(pool):
    """train_models compiles its initialisation at a lower LLVM level (faster
    compilation); the variables and keys are the same bits as at the default
    (an MLP here; CNN ensembles were checked the same way when it was made)."""
    from jaxunlearn.train import _loops, _shadow

    assert _shadow.cpu_compiler_options() == train._engine.CPU_COMPILER_OPTIONS
    model = _mlp()
    method = _loops._supervised_method(model, CFG, 3)
    base = jax.random.key(5)
    lowered = _shadow._replica_init.lower(
        model, _loops._ById(method), 2, 2, base, pool["image"][:1]
    )
    fast = lowered.compile(compiler_options=train._engine.CPU_COMPILER_OPTIONS)
    full = lowered.compile()
    a = jax.tree.leaves(fast(base, pool["image"][:1]))
    b = jax.tree.leaves(full(base, pool["image"][:1]))
    for x, y in zip(a, b, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "name, kw", [("mlp", {"hidden": (16,)}), ("cnn", {"widths": (4, 8)})]
)
def test_epochs_compiled_at_the_cpu_level_give_the_same_bits(pool, name, kw):
    """The engine compiles epochs at LLVM level 1 on CPU (faster compiles),
    convolutional ones without YNNPACK (faster convolutions); one epoch equals
    the default build's up to float rounding (MLP: the same bits; BatchNorm
    CNN: float32 rounding of other kernels), parameters,
    statistics and optimiser state."""
    model = models.get_model(name, 10, **kw)
    v = models.init(model, jax.random.key(0), pool["image"][:1])
    m = methods.get("finetune", apply_fn=models.make_apply_fn(model))
    arrays, sizes = train._engine._host_arrays({"retain": pool})
    state = m.init(v, key=jax.random.key(1))
    runner = train.EpochRunner(m, sizes, 16)
    lowered = jax.jit(runner._epoch).lower(state, arrays, jax.random.key(2), None)
    fast = train._engine.compile_lowered(lowered)  # what the engine runs
    full = lowered.compile()
    a = fast(state, arrays, jax.random.key(2), None)
    b = full(state, arrays, jax.random.key(2), None)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if name == "mlp":
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6
            )
