"""jaxunlearn against a plain PyTorch loop, side by side in one run.

Usage::

    python experiments/bench_vs_torch.py \
        --out experiments/results/bench_vs_torch_cpu.json
    python experiments/bench_vs_torch.py --quick     # smaller sizes, ~1 minute

Same data, model, optimiser (SGD, momentum 0.9, weight decay 5e-4) and batch
size (128) on both sides:

* ``cnn_epoch``: one fine-tuning epoch of the 3-block CNN (32, 64, 128) on
  28x28 Fashion-MNIST images (random images of that shape when the data set is
  absent): the first epoch (compilation included on the JAX side) and the
  steady state;
* ``mlp_epoch``: the same for ``MLP(256, 256)`` on the flattened images;
* ``lira_shadows``: 16 LiRA shadow MLPs on digits, 30 epochs, cosine schedule:
  the whole ``train.train_shadow_models`` call in a fresh process with an
  empty persistent compilation cache (``cold``), then in a second fresh
  process reading that cache (``warm``); PyTorch trains the 16 models one
  after another with the same recipe and scores them the same way.

JAX compile time is reported apart from run time. PyTorch runs with one
thread and with one per core (``--torch-threads``) and the faster setting is
its time: multi-threaded PyTorch can lose badly on small matrices and on a
loaded machine, one thread on convolutions. Ratios are ``torch_s / jax_s``
(above 1: jaxunlearn is faster). The JSON carries the
targets as claims. Without PyTorch the JAX side is written with
``"torch": null``. The load average is recorded: on a shared machine the
timings are noisy.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCH = 128
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
K_SHADOWS = 16
SHADOW_EPOCHS = 30
SHADOW_LR = 0.05


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def _ratio(torch_s, jax_s):
    if torch_s is None or jax_s is None or jax_s <= 0:
        return None
    return torch_s / jax_s


def _images_28x28(n: int):
    """Fashion-MNIST training images scaled to [0, 1], or random ones."""
    from jaxunlearn import data

    try:
        ds = data.load("fashion_mnist")
        images, labels = ds["train"]["image"][:n], ds["train"]["label"][:n]
        source = "fashion_mnist"
    except (FileNotFoundError, OSError, ValueError):
        rng = np.random.default_rng(0)
        images = rng.random((n, 28, 28, 1), dtype=np.float32)
        labels = rng.integers(0, 10, n).astype(np.int32)
        source = "random"
    images = np.asarray(images, np.float32)
    if images.max() > 1.5:  # integer pixels
        images = images / 255.0
    return images, np.asarray(labels, np.int32), source


# --------------------------------------------------------------------- JAX --


def _jax_epochs(model, images, labels, epochs: int) -> dict:
    """``train.unlearn`` with ``finetune``: per-epoch wall times."""
    import jax

    from jaxunlearn import methods, models, optim, train

    apply_fn = models.make_apply_fn(model)
    variables = models.init(model, jax.random.key(0), images[:1])
    method = methods.finetune(
        apply_fn, tx=optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    )
    stamps = []
    t0 = time.perf_counter()
    res = train.unlearn(
        method,
        variables,
        {"retain": {"image": images, "label": labels}},
        epochs=epochs,
        batch_size=BATCH,
        key=jax.random.key(1),
        callback=lambda e, m, s: stamps.append(time.perf_counter()),
    )
    times = np.diff([t0, *stamps])
    return {
        "first_epoch_s": float(times[0]),
        "compile_s": res.compile_time,
        "first_epoch_run_s": float(times[0]) - res.compile_time,
        "steady_epoch_s": float(np.median(times[1:])),
        "steady_epochs_s": [float(t) for t in times[1:]],
        "final_loss": res.history[-1]["loss"],
    }


_CHILD = "--shadow-child"


def _shadow_child(cache_dir: str) -> None:
    """Runs in a fresh process: one (and a repeated) shadow-ensemble call."""
    t_start = time.perf_counter()
    import jax

    from jaxunlearn import cache, data, models, train

    events = {"compiles": 0, "compile_s": 0.0, "cache_hits": 0}

    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            events["compiles"] += 1
            events["compile_s"] += duration

    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            events["cache_hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    cache.enable_compilation_cache(cache_dir)
    pool = data.load("digits")["train"]
    import_s = time.perf_counter() - t_start
    model = models.get_model("mlp", 10, hidden=(256, 256))
    cfg = train.TrainConfig(
        epochs=SHADOW_EPOCHS, batch_size=BATCH, learning_rate=SHADOW_LR
    )
    t0 = time.perf_counter()
    r = train.train_shadow_models(model, pool, cfg, num_models=K_SHADOWS, seed=0)
    call_s = time.perf_counter() - t0
    first = dict(events)
    t0 = time.perf_counter()
    train.train_shadow_models(model, pool, cfg, num_models=K_SHADOWS, seed=1)
    again_s = time.perf_counter() - t0
    out = {
        "call_s": call_s,
        "compile_s": r.compile_time,
        "run_s": r.run_time,
        "xla_compiles": first["compiles"],
        "xla_compile_s": first["compile_s"],
        "cache_hits": first["cache_hits"],
        "import_and_data_s": import_s,
        "same_process_second_call_s": again_s,
        "second_call_xla_compiles": events["compiles"] - first["compiles"],
        "loadavg": _load(),
        "logits_shape": list(r.logits["train"].shape),
        "train_accuracy_in": float(
            (r.logits["train"].argmax(-1) == pool["label"][None])[r.inclusion].mean()
        ),
    }
    print(json.dumps(out))


def _jax_shadows_fresh(cache_dir: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), _CHILD, cache_dir],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"shadow child failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------- torch --


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_cnn(torch, widths=(32, 64, 128)):
    nn = torch.nn
    layers, c = [], 1
    for w in widths:
        for _ in range(2):
            layers += [
                nn.Conv2d(c, w, 3, padding=1),
                nn.BatchNorm2d(w, momentum=0.01),
                nn.ReLU(),
            ]
            c = w
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def _torch_mlp(torch, d_in, hidden=(256, 256)):
    nn = torch.nn
    layers, c = [nn.Flatten()], d_in
    for w in hidden:
        layers += [nn.Linear(c, w), nn.ReLU()]
        c = w
    layers.append(nn.Linear(c, 10))
    return nn.Sequential(*layers)


def _torch_epochs(torch, model, x, y, epochs: int) -> dict:
    """Per-epoch wall times of a plain PyTorch loop (shuffled batches)."""
    F = torch.nn.functional
    opt = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    model.train()
    n, times, loss = len(y), [], None
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        total = torch.zeros(())
        for s in range(0, n, BATCH):
            idx = perm[s : s + BATCH]
            opt.zero_grad(set_to_none=True)
            out = F.cross_entropy(model(x[idx]), y[idx])
            out.backward()
            opt.step()
            total += out.detach()
        loss = float(total) / math.ceil(n / BATCH)
        times.append(time.perf_counter() - t0)
    return {
        "first_epoch_s": times[0],
        "steady_epoch_s": float(np.median(times[1:])),
        "steady_epochs_s": times[1:],
        "final_loss": loss,
    }


def _torch_shadows(torch, pool, inclusion) -> dict:
    """16 models one after another: the same recipe as ``TrainConfig``
    (cosine learning rate stepped per batch), then eval logits on the pool."""
    F = torch.nn.functional
    x_all = torch.from_numpy(np.ascontiguousarray(pool["image"]))
    y_all = torch.from_numpy(pool["label"].astype(np.int64))
    t0 = time.perf_counter()
    logits = []
    for k in range(len(inclusion)):
        torch.manual_seed(k)
        model = _torch_mlp(torch, int(np.prod(x_all.shape[1:])))
        opt = torch.optim.SGD(
            model.parameters(),
            lr=SHADOW_LR,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
        )
        idx_k = torch.from_numpy(np.flatnonzero(inclusion[k]))
        steps = math.ceil(len(idx_k) / BATCH)
        total, t = SHADOW_EPOCHS * steps, 0
        x, y = x_all[idx_k], y_all[idx_k]
        model.train()
        for _ in range(SHADOW_EPOCHS):
            perm = torch.randperm(len(idx_k))
            for s in range(steps):
                for g in opt.param_groups:
                    g["lr"] = SHADOW_LR * 0.5 * (1 + math.cos(math.pi * t / total))
                b = perm[s * BATCH : (s + 1) * BATCH]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
                t += 1
        model.eval()
        with torch.no_grad():
            logits.append(model(x_all).numpy())
    call_s = time.perf_counter() - t0
    logits = np.stack(logits)
    acc = (logits.argmax(-1) == pool["label"][None])[inclusion].mean()
    return {"call_s": call_s, "train_accuracy_in": float(acc)}


# --------------------------------------------------------------------- run --


def _best_of_threads(torch, threads, fn, time_key):
    """``fn()`` under each ``torch.set_num_threads``; the fastest result,
    with every setting's under ``"by_threads"``."""
    runs = {}
    for t in threads:
        torch.set_num_threads(t)
        runs[t] = fn()
        runs[t]["loadavg"] = _load()
    best = min(runs, key=lambda t: runs[t][time_key])
    return {**runs[best], "threads": best, "by_threads": runs}


def run(quick: bool = False, torch_threads=None) -> dict:
    import jax

    from jaxunlearn import cache, data, models

    torch = _torch()
    threads = tuple(torch_threads or sorted({1, os.cpu_count() or 1}))
    n_cnn, e_cnn = (512, 3) if quick else (2048, 3)
    n_mlp, e_mlp = (2048, 3) if quick else (16384, 4)
    images, labels, source = _images_28x28(max(n_cnn, n_mlp))
    out = {
        "benchmark": "bench_vs_torch",
        "quick": quick,
        "device": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "versions": {
            **cache.versions(),
            "torch": None if torch is None else torch.__version__,
        },
        "torch_threads_tried": None if torch is None else list(threads),
        "loadavg_start": _load(),
        "batch_size": BATCH,
        "optimiser": f"SGD lr {LR} momentum {MOMENTUM} weight decay {WEIGHT_DECAY}",
        "data_28x28": source,
        "cases": {},
    }
    log = lambda s: print(f"[bench_vs_torch] {s}", file=sys.stderr, flush=True)  # noqa: E731

    # (a) CNN epoch, (b) MLP epoch.
    for name, n, epochs, jax_model, torch_model in (
        (
            "cnn_epoch",
            n_cnn,
            e_cnn,
            models.get_model("cnn", 10),
            None if torch is None else lambda: _torch_cnn(torch),
        ),
        (
            "mlp_epoch",
            n_mlp,
            e_mlp,
            models.get_model("mlp", 10, hidden=(256, 256)),
            None if torch is None else lambda: _torch_mlp(torch, 28 * 28),
        ),
    ):
        log(f"{name} (jax) ...")
        x, y = images[:n], labels[:n]
        case = {"n": n, "epochs": epochs, "steps_per_epoch": -(-n // BATCH)}
        case["jax"] = _jax_epochs(jax_model, x, y, epochs)
        case["jax"]["loadavg"] = _load()
        case["torch"] = None
        if torch is not None:
            log(f"{name} (torch) ...")
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            yt = torch.from_numpy(y.astype(np.int64))

            def torch_run(make=torch_model, xt=xt, yt=yt, epochs=epochs):
                torch.manual_seed(0)
                return _torch_epochs(torch, make(), xt, yt, epochs)

            case["torch"] = _best_of_threads(
                torch, threads, torch_run, "steady_epoch_s"
            )
            case["ratio_steady"] = _ratio(
                case["torch"]["steady_epoch_s"], case["jax"]["steady_epoch_s"]
            )
            case["ratio_first_epoch"] = _ratio(
                case["torch"]["first_epoch_s"], case["jax"]["first_epoch_s"]
            )
        out["cases"][name] = case

    # (c) LiRA shadows: fresh processes, cold then warm compilation cache.
    pool = data.load("digits")["train"]
    case = {
        "num_models": K_SHADOWS,
        "epochs": SHADOW_EPOCHS,
        "pool": len(pool["label"]),
        "model": "mlp (256, 256)",
        "learning_rate": f"{SHADOW_LR} cosine",
    }
    with tempfile.TemporaryDirectory(prefix="jaxunlearn-xla-") as tmp:
        log("lira_shadows (jax, fresh process, cold cache) ...")
        case["jax_cold"] = _jax_shadows_fresh(tmp)
        log("lira_shadows (jax, fresh process, warm cache) ...")
        case["jax_warm"] = _jax_shadows_fresh(tmp)
    case["torch"] = None
    if torch is not None:
        log("lira_shadows (torch) ...")
        # The same inclusion masks as train_shadow_models(seed=0).
        n = len(pool["label"])
        inclusion = np.random.default_rng(0).random((K_SHADOWS, n)) < 0.5
        case["torch"] = _best_of_threads(
            torch, threads, lambda: _torch_shadows(torch, pool, inclusion), "call_s"
        )
        t = case["torch"]["call_s"]
        case["ratio_cold"] = _ratio(t, case["jax_cold"]["call_s"])
        case["ratio_warm"] = _ratio(t, case["jax_warm"]["call_s"])
        case["ratio_training_only"] = _ratio(t, case["jax_warm"]["run_s"])
    out["cases"]["lira_shadows"] = case
    out["loadavg_end"] = _load()
    out["claims"] = _claims(out["cases"], quick)
    return out


def _claims(cases, quick):
    def claim(id_, text, ours, threshold):
        return {
            "id": id_,
            "text": text,
            "ours": ours,
            "threshold": threshold,
            "holds": None if ours is None or quick else bool(ours >= threshold),
        }

    shadows = cases["lira_shadows"]
    return [
        claim(
            "shadows_fresh_process",
            f"{K_SHADOWS} LiRA shadow MLPs, whole call in a fresh process with a"
            " cold compilation cache: >= 1.5x the PyTorch per-model loop",
            shadows.get("ratio_cold"),
            1.5,
        ),
        claim(
            "shadows_warm_cache",
            "the same call with a warm persistent compilation cache: >= 2x",
            shadows.get("ratio_warm"),
            2.0,
        ),
        claim(
            "cnn_epoch_steady",
            "3-block CNN fine-tuning epoch (28x28, batch 128), steady state:"
            " >= 1.0x PyTorch",
            cases["cnn_epoch"].get("ratio_steady"),
            1.0,
        ),
    ]


def main(argv=None):
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == _CHILD:
        _shadow_child(sys.argv[2])
        return None
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument(
        "--torch-threads",
        default=None,
        help="comma-separated PyTorch thread counts to try (default: 1 and one"
        " per core); the fastest is the baseline",
    )
    args = p.parse_args(argv)
    threads = None
    if args.torch_threads:
        threads = [int(t) for t in args.torch_threads.split(",")]
    t0 = time.perf_counter()
    res = run(quick=args.quick, torch_threads=threads)
    res["wall_time_s"] = time.perf_counter() - t0
    if args.out:
        from jaxunlearn import cache

        cache.atomic_write_json(args.out, res)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
