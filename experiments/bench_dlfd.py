"""DLFD speed: one DLFD step against one fine-tune step, and Sinkhorn scaling.

Usage::

    python experiments/bench_dlfd.py --out experiments/results/bench_dlfd_cpu.json
    python experiments/bench_dlfd.py --smoke --out /tmp/b.json

1. ``step``: the same batch (retain + forget, BatchNorm CNN on 28x28 images)
   through ``dlfd`` (M perturbation steps, dynamic forgetting off, so every
   batch is perturbed; and with the monitor on) and through ``finetune``.
   Target: a DLFD step costs at most ``M + 2`` fine-tune steps (M extra
   forward / backward passes plus the forget features and the model step).
   ``dlfd_rolled`` is the same step with the M sign steps in a loop that is
   not unrolled (``unroll=False``), which XLA:CPU runs much slower;
   ``dlfd_with_monitor`` runs the forgetting-score monitor every step (its
   perturbation then sits in a ``lax.cond``, slow on XLA:CPU) and
   ``dlfd_with_monitor_select`` the same with ``perturb_branch="select"``.
2. ``sinkhorn``: ``losses.sinkhorn_cost`` value and gradient for point clouds
   of n = 32 .. 1024 points and widths d = 32 .. 512 (cosine cost, epsilon
   0.01, 50 iterations).

Compile time is reported separately from the steady-state run time (median
of repeated calls, each synchronised with ``block_until_ready``).
"""

import argparse
import functools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import cache, losses, methods, models


def _time(fn, *args, repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t)
    run = statistics.median(runs)
    return {"compile_s": max(first - run, 0.0), "first_call_s": first, "run_s": run}


def _batch(rng, n, hw, num_classes):
    def part():
        return {
            "image": jnp.asarray(rng.random((n, hw, hw, 1), np.float32)),
            "label": jnp.asarray(rng.integers(0, num_classes, n).astype(np.int32)),
            "mask": jnp.ones(n, bool),
        }

    return {"retain": part(), "forget": part()}


def bench_step(
    *, batch_size, hw, widths, perturb_steps, repeats, monitor_size, iterations=50
):
    rng = np.random.default_rng(0)
    model = models.get_model("cnn", 10, widths=widths)
    apply_fn = models.make_apply_fn(model)
    batch = _batch(rng, batch_size, hw, 10)
    v = models.init(model, jax.random.key(0), batch["retain"]["image"][:1])
    val = {
        "image": rng.random((monitor_size, hw, hw, 1), np.float32),
        "label": rng.integers(0, 10, monitor_size).astype(np.int32),
    }
    out = {}
    dlfd = functools.partial(
        methods.get,
        "dlfd",
        apply_fn=apply_fn,
        perturb_steps=perturb_steps,
        sinkhorn_iterations=iterations,
    )
    monitored = functools.partial(
        dlfd, forget_set=val, val_set=val, threshold=0.0, monitor_size=monitor_size
    )
    cases = {
        "finetune": methods.get("finetune", apply_fn=apply_fn, learning_rate=0.01),
        "dlfd": dlfd(dynamic=False),
        "dlfd_rolled": dlfd(dynamic=False, unroll=False),
        "dlfd_with_monitor": monitored(),
        "dlfd_with_monitor_select": monitored(perturb_branch="select"),
    }
    for name, m in cases.items():
        st = m.init(v, key=jax.random.key(1), num_steps=100)
        step = jax.jit(m.step)
        out[name] = _time(step, st, batch, jax.random.key(2), repeats=repeats)
    ratio = out["dlfd"]["run_s"] / out["finetune"]["run_s"]
    return {
        "batch_size": batch_size,
        "image": [hw, hw, 1],
        "cnn_widths": list(widths),
        "perturb_steps": perturb_steps,
        "sinkhorn_iterations": iterations,
        "monitor_size": monitor_size,
        **out,
        "dlfd_over_finetune": ratio,
        "monitor_overhead": out["dlfd_with_monitor"]["run_s"] / out["dlfd"]["run_s"],
        "monitor_overhead_select": out["dlfd_with_monitor_select"]["run_s"]
        / out["dlfd"]["run_s"],
        "rolled_loop_slowdown": out["dlfd_rolled"]["run_s"] / out["dlfd"]["run_s"],
        "target_ratio": perturb_steps + 2,
        "meets_target": ratio <= perturb_steps + 2,
    }


def bench_sinkhorn(*, sizes, widths, repeats, iterations=50):
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for d in widths:
            x = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
            y = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))

            def cost(a, b):
                return losses.sinkhorn_cost(a, b, iterations=iterations)[0]

            value = jax.jit(cost)
            grad = jax.jit(jax.grad(cost))
            rows.append(
                {
                    "n": n,
                    "d": d,
                    "iterations": iterations,
                    "value": _time(value, x, y, repeats=repeats),
                    "grad": _time(grad, x, y, repeats=repeats),
                }
            )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="experiments/results/bench_dlfd_cpu.json")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        step = bench_step(
            batch_size=8,
            hw=8,
            widths=(4,),
            perturb_steps=1,
            repeats=1,
            monitor_size=16,
            iterations=3,
        )
        sink = bench_sinkhorn(sizes=(8,), widths=(4,), repeats=1, iterations=3)
    else:
        step = bench_step(
            batch_size=32,
            hw=28,
            widths=(32, 64, 128),
            perturb_steps=15,
            repeats=5,
            monitor_size=256,
        )
        sink = bench_sinkhorn(
            sizes=(32, 64, 128, 256, 512, 1024), widths=(32, 128, 512), repeats=5
        )
    res = {
        "benchmark": "bench_dlfd",
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": cache.versions(),
        "step": step,
        "sinkhorn": sink,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cache.atomic_write_json(args.out, res)
    print(json.dumps(step, indent=1))
    for r in sink:
        print(
            f"sinkhorn n={r['n']:5d} d={r['d']:4d}:"
            f" value {1e3 * r['value']['run_s']:.2f}"
            f" ms, grad {1e3 * r['grad']['run_s']:.2f} ms (compile"
            f" {r['grad']['compile_s']:.2f} s)"
        )
    return res


if __name__ == "__main__":
    main()
