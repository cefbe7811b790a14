"""Blend speed: all clusters in one vmapped program vs the per-cluster loop vs DM.

Usage::

    python experiments/bench_condense.py \\
        --out experiments/results/bench_condense_cpu.json
    python experiments/bench_condense.py --quick --out /tmp/b.json

On a fixed set of Fashion-MNIST 28x28 training images (digits 8x8 when the
IDX files are missing), for K = 1, 4, 16 clusters per class (10, 40, 160
clusters; empty forget set, so every cluster is free):

* ``cluster``: random-ConvNet-3 features and per-class k-means (once per K);
* ``blend_vmap``: ``condense.blend(vectorize=True)``, every cluster in one
  vmapped, jitted program per iteration;
* ``blend_loop``: ``condense.blend(vectorize=False)``, the reference code's
  cluster-by-cluster loop over the same per-cluster functions;
* the same two with ``extractor="fixed"`` (one network, targets once);
* ``dm``: ``condense.dm`` at ``ipc = K`` (the same number of synthetic
  images), the same number of iterations, a fresh network and real batch per
  iteration; ``dm_20000_iters_s`` extrapolates its run time to DM's 20000
  iterations.

Every row runs all methods side by side in one process. Compile time is
reported apart from run time (``condense.blend`` / ``condense.dm`` compile
ahead of the loop); ``max_abs_diff`` checks that the vmapped and looped
Blend agree.
"""

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from jaxunlearn import cache, condense, data


def _images(n_per_class, quick):
    try:
        if quick:
            raise FileNotFoundError
        ds = data.load("fashion_mnist")
        name = "fashion_mnist"
    except (FileNotFoundError, ValueError, OSError):
        ds = data.load("digits")
        name = "digits"
    x, y = ds["train"]["image"], ds["train"]["label"]
    keep = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in np.unique(y)])
    return name, x[keep], y[keep].astype(np.int32)


def _timing(diag, iterations):
    return {
        "compile_s": diag["compile_s"],
        "run_s": diag["run_s"],
        "per_iter_s": diag["run_s"] / max(iterations, 1),
        "final_loss": float(diag["loss"][-1]) if len(diag["loss"]) else None,
    }


def bench(*, n_per_class, ks, iterations, width, depth, batch_real, quick):
    name, x, y = _images(n_per_class, quick)
    rows = []
    for k in ks:
        t = time.perf_counter()
        clustering = condense.cluster(
            x, y, k, key=jax.random.key(0), width=width, depth=depth
        )
        cluster_s = time.perf_counter() - t
        part = condense.partition(clustering.fine_labels, [])
        row = {
            "k_per_class": k,
            "clusters": int(len(part.cluster)),
            "images": int(len(x)),
            "max_cluster_size": int(part.sizes.max()),
            "mean_cluster_size": float(part.sizes.mean()),
            "cluster": {
                "total_s": cluster_s,
                "features_s": clustering.features_s,
                "kmeans_s": clustering.kmeans_s,
            },
        }
        outs = {}
        for extractor in ("random", "fixed"):
            for vectorize in (True, False):
                tag = "blend_" + ("vmap" if vectorize else "loop")
                if extractor == "fixed":
                    tag += "_fixed"
                out, _, diag = condense.blend(
                    x,
                    part.index,
                    part.mask,
                    y,
                    key=jax.random.key(1),
                    iterations=iterations,
                    ipc=k,
                    extractor=extractor,
                    vectorize=vectorize,
                    width=width,
                    depth=depth,
                )
                outs[tag] = out
                row[tag] = _timing(diag, iterations)
                row[tag]["learning_rate"] = diag["learning_rate"]
        row["max_abs_diff"] = {
            "random": float(np.abs(outs["blend_vmap"] - outs["blend_loop"]).max()),
            "fixed": float(
                np.abs(outs["blend_vmap_fixed"] - outs["blend_loop_fixed"]).max()
            ),
        }
        _, _, diag = condense.dm(
            x,
            y,
            k,
            key=jax.random.key(2),
            iterations=iterations,
            batch_real=batch_real,
            width=width,
            depth=depth,
        )
        row["dm"] = _timing(diag, iterations)
        row["dm"]["dm_20000_iters_s"] = row["dm"]["per_iter_s"] * 20000
        for tag in ("blend_loop", "blend_loop_fixed"):
            vm = row[tag.replace("loop", "vmap")]["run_s"]
            row[f"speedup_{tag.replace('blend_loop', 'vmap')}"] = row[tag]["run_s"] / vm
        rows.append(row)
        print(
            f"K={k:3d} clusters={row['clusters']:4d}:"
            f" vmap {row['blend_vmap']['run_s']:.2f}s"
            f" (compile {row['blend_vmap']['compile_s']:.1f}s),"
            f" loop {row['blend_loop']['run_s']:.2f}s"
            f" (compile {row['blend_loop']['compile_s']:.1f}s),"
            f" fixed vmap {row['blend_vmap_fixed']['run_s']:.2f}s"
            f" / loop {row['blend_loop_fixed']['run_s']:.2f}s,"
            f" dm {row['dm']['run_s']:.2f}s (compile {row['dm']['compile_s']:.1f}s),"
            f" diff {row['max_abs_diff']['random']:.1e}",
            flush=True,
        )
    return name, rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="experiments/results/bench_condense_cpu.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        config = dict(
            n_per_class=8, ks=(1,), iterations=1, width=4, depth=2, batch_real=8
        )
    else:
        config = dict(
            n_per_class=160,
            ks=(1, 4, 16),
            iterations=12,
            width=32,
            depth=3,
            batch_real=256,
        )
    load_start = os.getloadavg()
    t = time.perf_counter()
    name, rows = bench(quick=args.quick, **config)
    res = {
        "benchmark": "bench_condense",
        "dataset": name,
        "config": config,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": cache.versions(),
        "total_s": time.perf_counter() - t,
        # The machine may be shared: 1-minute load averages around the run.
        "loadavg_start": load_start[0],
        "loadavg_end": os.getloadavg()[0],
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cache.atomic_write_json(args.out, res)
    print(json.dumps({"total_s": res["total_s"]}))


if __name__ == "__main__":
    main()
