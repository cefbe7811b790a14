"""Benchmark of the training step: compile time, steady-state steps/s, and epoch
time with and without ``lax.scan``.

Usage::

    python experiments/bench_train.py --out experiments/results/bench_train_cpu.json
    python experiments/bench_train.py --smoke      # seconds, for tests

Cases (batch 128): MLP on digits (8x8x1), the 3-block CNN on 28x28x1, and
ResNet-18 (CIFAR stem, BatchNorm) on 32x32x3. Each case reports:

* ``step_compile_s`` / ``step_per_s``: one jitted ``finetune`` step, compiled
  ahead of time, then timed over repeated calls (steady state);
* ``scan_epoch_compile_s`` / ``scan_epoch_s``: one whole epoch as a single
  compiled ``lax.scan`` program (``train.EpochRunner(mode="scan")``);
* ``loop_epoch_compile_s`` / ``loop_epoch_s``: the epoch as one compiled step
  per batch called from Python, data on device (``mode="loop"``);
* ``auto_mode``: what ``EpochRunner``'s default picks on this backend;
* ``host_loop_epoch_s``: a Python loop calling the jitted step once per batch,
  with batches indexed on the host and transferred each step (how
  PyTorch-style loops run).
All variants share data, keys and model; compile time is never inside run time.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import cache, data, methods, models, optim, train


def _case(name, model, shape, n, batch_size, reps, num_classes=10, skip_scan=False):
    rng = np.random.default_rng(0)
    images = rng.random((n, *shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    if name == "mlp_digits":
        ds = data.load("digits")
        images = ds["train"]["image"][:n]
        labels = ds["train"]["label"][:n]
        n = len(labels)
    apply_fn = models.make_apply_fn(model)
    variables = models.init(model, jax.random.key(0), images[:1])
    method = methods.finetune(
        apply_fn, tx=optim.sgd(0.01, momentum=0.9, weight_decay=5e-4)
    )
    key = jax.random.key(1)
    out = {
        "case": name,
        "n": n,
        "batch_size": batch_size,
        "input_shape": list(shape),
        "params": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
    }

    def fresh_state():  # the step donates its state: never hand it `variables`
        return method.init(jax.tree.map(lambda x: jnp.array(x, copy=True), variables))

    # 1) single jitted step, steady state.
    state = fresh_state()
    batch = {
        "retain": {
            "image": jnp.asarray(images[:batch_size]),
            "label": jnp.asarray(labels[:batch_size]),
            "mask": jnp.ones(batch_size, bool),
        }
    }
    t0 = time.perf_counter()
    step = jax.jit(method.step, donate_argnums=(0,)).lower(state, batch, key).compile()
    out["step_compile_s"] = time.perf_counter() - t0
    state, m = step(state, batch, key)  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(reps):
        state, m = step(state, batch, key)
    jax.block_until_ready((state, m))
    dt = time.perf_counter() - t0
    out["step_per_s"] = reps / dt
    out["step_ms"] = 1000 * dt / reps

    # 2) whole epoch: one lax.scan program, and one compiled step per batch
    # called from Python with the batch gathered on device; plus what "auto"
    # picks on this backend.
    arrays = {"retain": {"image": jnp.asarray(images), "label": jnp.asarray(labels)}}
    for mode in ("scan", "loop"):
        if mode == "scan" and skip_scan:
            out["scan_epoch_s"] = None
            out["scan_epoch_compile_s"] = None
            out["scan_skipped"] = (
                "XLA:CPU runs convolutions inside lax.scan 30-80x slower; measured"
                " once in bench_train_cpu_scan_slowdown.json (370 s per step)"
            )
            continue
        runner = train.EpochRunner(method, {"retain": n}, batch_size, mode=mode)
        state = fresh_state()
        runner.compile(state, arrays, key)
        out[f"{mode}_epoch_compile_s"] = runner.compile_time
        state, m = runner(state, arrays, key)  # warm-up epoch
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        state, m = runner(state, arrays, jax.random.fold_in(key, 1))
        jax.block_until_ready((state, m))
        out[f"{mode}_epoch_s"] = time.perf_counter() - t0
    out["steps_per_epoch"] = runner.num_steps
    auto = train.EpochRunner(method, {"retain": n}, batch_size)
    auto.compile(fresh_state(), arrays, key)
    out["auto_mode"] = auto.resolved_mode

    # 3) the same epoch as a Python loop over the jitted step, host batching.
    state = fresh_state()
    idx, mask = data.epoch_indices(key, n, batch_size)
    idx, mask = np.asarray(idx), np.asarray(mask)

    def loop_epoch(state):
        for s in range(idx.shape[0]):
            b = {
                "retain": {
                    "image": jax.device_put(images[idx[s]]),
                    "label": jax.device_put(labels[idx[s]]),
                    "mask": jax.device_put(mask[s]),
                }
            }
            state, m = step(state, b, key)
        return jax.block_until_ready((state, m))

    state, _ = loop_epoch(state)  # warm-up
    t0 = time.perf_counter()
    loop_epoch(state)
    out["loop_epoch_s_host"] = time.perf_counter() - t0
    out["host_loop_epoch_s"] = out.pop("loop_epoch_s_host")
    best = min(t for t in (out["scan_epoch_s"], out["loop_epoch_s"]) if t is not None)
    out["device_vs_host_loop_speedup"] = out["host_loop_epoch_s"] / best
    return out


def run(smoke: bool = False, partial_out: str | None = None) -> dict:
    on_cpu = jax.default_backend() == "cpu"
    bs = 16 if smoke else 128
    # Sizes: (examples per epoch, timed steady-state steps). A 2-core CPU runs
    # ResNet-18 at seconds per step, so the CPU sizes are small.
    if smoke:
        sizes = {"mlp": (64, 3), "cnn": (64, 3), "resnet": (32, 2)}
    elif on_cpu:
        sizes = {"mlp": (1437, 60), "cnn": (512, 10), "resnet": (128, 2)}
    else:
        sizes = {"mlp": (1437, 200), "cnn": (8192, 100), "resnet": (8192, 50)}
    small = smoke
    cases = [
        ("mlp_digits", models.get_model("mlp", 10), (8, 8, 1), *sizes["mlp"]),
        (
            "cnn_28x28",
            models.get_model("cnn", 10, **({"widths": (4, 4, 4)} if small else {})),
            (28, 28, 1),
            *sizes["cnn"],
        ),
        (
            "resnet18_32x32",
            models.get_model("resnet18", 10, **({"width": 4} if small else {})),
            (32, 32, 3),
            *sizes["resnet"],
        ),
    ]
    results = []
    for name, model, shape, n, r in cases:
        print(f"[bench_train] {name} ...", file=sys.stderr, flush=True)
        skip = on_cpu and not smoke and name == "resnet18_32x32"
        results.append(_case(name, model, shape, n, bs, r, skip_scan=skip))
        if partial_out:  # keep what is done if a slow case is interrupted
            cache.atomic_write_json(partial_out, {"partial": True, "cases": results})
    return {
        "benchmark": "bench_train",
        "smoke": smoke,
        "device": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "versions": cache.versions(),
        "cases": results,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    args = p.parse_args(argv)
    res = run(smoke=args.smoke, partial_out=args.out)
    text = json.dumps(res, indent=2)
    if args.out:
        cache.atomic_write_json(args.out, res)
    print(text)
    return res


if __name__ == "__main__":
    main()
