"""Distributional unlearning on images: the paper's CIFAR-10 "cat" protocol
(App. B.5) on Fashion-MNIST, with every retraining vmapped.

Usage::

    python experiments/distributional_images.py --workdir runs/dist_images
    python experiments/distributional_images.py --config smoke --workdir /tmp/di

Protocol, per seed: train the 3-block CNN on the whole (subsampled) train set
and take its penultimate features; P1 = the forget class's train images, P2 =
the other classes (Mahalanobis statistics estimated on P2 with a Ledoit-Wolf
covariance); score P1 by each rule (``random``, ``maha_mu2``, ``lr_maha``,
``knn_ratio``, ``norm``); for every deletion fraction delete that top
fraction of P1 and retrain the same CNN from scratch; report forget-class and
other-class test accuracy. All (score, fraction) retrainings of a seed are
ONE vmapped program (``train.train_models`` with one inclusion mask per model,
cached by manifest so an interrupted run resumes per seed).

Configs: ``cpu`` (default; Fashion-MNIST class 6 "shirt" -- like CIFAR's cat,
the class its CNN gets most wrong -- 6,000 train images, CNN widths 8/16/32,
3 seeds), ``full`` (CIFAR-10 via TFDS, class 3 "cat", widths 32/64/128, full
data, 10 epochs, 30 seeds; for accelerators) and ``smoke`` (digits, seconds).
The paper's §4.4 says the features come from a pretrained ResNet-18 while App.
B.5 says the same 3-block CNN; we follow B.5.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxunlearn import cache, data, models, select, train

# Paper Table 2 (CIFAR-10 row): % of cats deleted to halve cat accuracy.
PAPER = {"random": 80, "selective": 50, "saving": 38, "selective_score": "lr_maha"}
SCORES = ("random", "maha_mu2", "lr_maha", "knn_ratio", "norm")


@dataclasses.dataclass
class Config:
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    forget_class: int = 6
    train_subsample: int | None = 6000
    test_subsample: int | None = 5000
    model: str = "cnn"
    model_kwargs: dict = dataclasses.field(
        default_factory=lambda: {"widths": (8, 16, 32)}
    )
    training: train.TrainConfig = dataclasses.field(
        default_factory=lambda: train.TrainConfig(
            epochs=6, batch_size=128, learning_rate=0.05
        )
    )
    fractions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0)
    scores: tuple[str, ...] = SCORES
    seeds: tuple[int, ...] = (0, 1, 2)
    covariance: str = "ledoit_wolf"
    knn_k: int = 10
    models_per_program: int = 16  # replicas vmapped together


def get_config(name: str = "cpu") -> Config:
    if name == "cpu":
        return Config()
    if name == "full":
        return Config(
            dataset="cifar10",
            forget_class=3,
            train_subsample=None,
            test_subsample=None,
            model_kwargs={"widths": (32, 64, 128)},
            training=train.TrainConfig(epochs=10, batch_size=128, learning_rate=0.05),
            fractions=tuple(np.round(np.arange(0, 1.01, 0.1), 2)),
            seeds=tuple(range(30)),
            models_per_program=32,
        )
    if name == "smoke":
        return Config(
            dataset="digits",
            forget_class=3,
            train_subsample=None,
            test_subsample=None,
            model="mlp",
            model_kwargs={"hidden": (32,)},
            training=train.TrainConfig(epochs=4, batch_size=64, learning_rate=0.05),
            fractions=(0.0, 0.5, 1.0),
            scores=("random", "lr_maha", "knn_ratio"),
            seeds=(0,),
        )
    raise ValueError(f"unknown config {name!r}; valid: cpu, full, smoke.")


def _subsample(part, n, seed):
    if not n or n >= len(part["label"]):
        return part
    keep = np.sort(np.random.default_rng(seed).choice(len(part["label"]), n, False))
    return {k: v[keep] for k, v in part.items()}


def _scores(cfg, name, f1, f2, key):
    return np.asarray(
        select.score(
            name,
            f1,
            f2,
            key=key,
            k=cfg.knn_k,
            covariance=cfg.covariance,
        )
    )


def run_seed(cfg: Config, seed: int, workdir: str, log=print) -> dict[str, Any]:
    ds = data.load(cfg.dataset, data_dir=cfg.data_dir)
    pool = _subsample(ds["train"], cfg.train_subsample, seed)
    test = _subsample(ds["test"], cfg.test_subsample, seed + 1)
    num_classes = ds["num_classes"]
    model = models.get_model(cfg.model, num_classes, **cfg.model_kwargs)
    apply_fn = models.make_apply_fn(model)
    cache_dir = os.path.join(workdir, "cache")

    # 1. Feature model on all data (one replica, weights kept).
    all_in = np.ones((1, len(pool["label"])), bool)
    t0 = time.perf_counter()
    feat_model = train.train_models(
        model, pool, cfg.training, inclusion=all_in, seed=seed, keep_variables=True
    )
    variables = jax.tree.map(lambda x: x[0], feat_model.variables)
    feats = train.predict(apply_fn, variables, pool["image"], features=True)
    feature_time = time.perf_counter() - t0
    forget_idx = np.flatnonzero(pool["label"] == cfg.forget_class)
    retain_idx = np.flatnonzero(pool["label"] != cfg.forget_class)
    f1, f2 = feats[forget_idx], feats[retain_idx]

    # 2. Scores and inclusion masks: one model per (score, fraction), with the
    # score-independent ends (0 and 100%) trained once.
    key = jax.random.fold_in(jax.random.key(seed), 7)
    scores = {s: _scores(cfg, s, f1, f2, key) for s in cfg.scores}
    jobs, masks = [], []
    for frac in cfg.fractions:
        budget = select.budget_from_fraction(frac, len(forget_idx))
        names = ["all"] if budget in (0, len(forget_idx)) else list(cfg.scores)
        for s in names:
            sc = scores[cfg.scores[0] if s == "all" else s]
            kept, manifest = select.edit_dataset(
                len(pool["label"]), forget_idx, sc, budget, score_name=s
            )
            m = np.zeros(len(pool["label"]), bool)
            m[kept] = True
            manifest["removed_fraction"] = manifest.pop("fraction")
            jobs.append({**manifest, "score": s, "fraction": float(frac)})
            masks.append(m)
    masks = np.stack(masks)

    # 3. Retrain every edited set from scratch, vmapped in chunks.
    logits, run_time, compile_time = [], 0.0, 0.0
    for i in range(0, len(masks), cfg.models_per_program):
        res = train.train_models(
            model,
            pool,
            cfg.training,
            inclusion=masks[i : i + cfg.models_per_program],
            seed=seed * 1000 + 1 + i,
            score_sets={"test": test},
            cache_dir=cache_dir,
        )
        logits.append(res.logits["test"])
        run_time += res.run_time
        compile_time += res.compile_time
        log(
            f"[images] seed {seed}: models {i}..{i + len(res.logits['test']) - 1}"
            f" ({res.cache}, run {res.run_time:.1f}s, compile {res.compile_time:.1f}s)"
        )
    logits = np.concatenate(logits)
    pred = logits.argmax(-1)
    is_f = test["label"] == cfg.forget_class
    rows = []
    for j, job in enumerate(jobs):
        correct = pred[j] == test["label"]
        rows.append(
            {
                "seed": seed,
                **job,
                "acc_forget": float(correct[is_f].mean()),
                "acc_other": float(correct[~is_f].mean()),
            }
        )
    return {
        "rows": rows,
        "num_models": len(masks),
        "retrain_run_time_s": run_time,
        "retrain_compile_time_s": compile_time,
        "feature_model_time_s": feature_time,
        "forget_train_size": int(len(forget_idx)),
        "score_rank_correlation": _rank_corr(scores),
    }


def _rank_corr(scores):
    names = list(scores)
    ranks = {n: np.argsort(np.argsort(-scores[n])) for n in names}
    return {
        f"{a}~{b}": float(np.corrcoef(ranks[a], ranks[b])[0, 1])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }


def _curves(cfg, rows):
    """score -> fraction -> [(acc_forget, acc_other) per seed]."""
    out = {s: {} for s in cfg.scores}
    for r in rows:
        targets = cfg.scores if r["score"] == "all" else [r["score"]]
        # Snap to the configured fraction (rows from before removed_fraction
        # was split out carry the realised budget / size instead).
        frac = min(cfg.fractions, key=lambda f: abs(f - r["fraction"]))
        for s in targets:
            out[s].setdefault(float(frac), []).append((r["acc_forget"], r["acc_other"]))
    return {s: dict(sorted(v.items())) for s, v in out.items()}


def _halving(curve):
    """Smallest deletion fraction at which mean forget accuracy is halved
    (linear interpolation between measured fractions)."""
    fr = np.array(list(curve))
    acc = np.array([np.mean([a for a, _ in v]) for v in curve.values()])
    target = 0.5 * acc[0]
    below = np.flatnonzero(acc <= target)
    if not below.size:
        return None, None
    j = below[0]
    grid = float(fr[j])
    if j == 0:
        return grid, grid
    x0, x1, y0, y1 = fr[j - 1], fr[j], acc[j - 1], acc[j]
    interp = float(x0 + (y0 - target) * (x1 - x0) / (y0 - y1))
    return grid, interp


def _plot(workdir, cfg, curves):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    from jaxunlearn.eval import save_figure

    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for s, curve in curves.items():
        fr = np.array(list(curve))
        for i, title in enumerate(("forget-class", "other-class")):
            vals = np.array([[p[i] for p in v] for v in curve.values()], dtype=object)
            m = np.array([np.mean(v) for v in vals])
            sd = np.array([np.std(v) for v in vals])
            axes[i].plot(100 * fr, 100 * m, marker="o", ms=3, label=s)
            axes[i].fill_between(100 * fr, 100 * (m - sd), 100 * (m + sd), alpha=0.15)
            axes[i].set_title(f"{title} test accuracy")
            axes[i].set_xlabel("% of forget class deleted")
            axes[i].set_ylabel("accuracy (%)")
    first = next(iter(curves.values()))
    base = 100 * np.mean([a for a, _ in next(iter(first.values()))])
    axes[0].axhline(base / 2, color="gray", ls="--", lw=0.8, label="half")
    axes[0].legend(fontsize=7)
    save_figure(fig, os.path.join(workdir, "accuracy.png"))
    return ["accuracy.png"]


def _report(cfg, workdir, rows, per_seed, wall):
    curves = _curves(cfg, rows)
    halving = {s: _halving(c) for s, c in curves.items()}
    compute = sum(
        r["retrain_run_time_s"]
        + r["retrain_compile_time_s"]
        + r["feature_model_time_s"]
        for r in per_seed.values()
    )
    lines = [
        f"# Distributional unlearning on images: {cfg.dataset}, forget class"
        f" {cfg.forget_class}",
        "",
        f"Seeds {list(cfg.seeds)}; train / test subsample {cfg.train_subsample} /"
        f" {cfg.test_subsample}; {cfg.model} {cfg.model_kwargs}, {cfg.training.epochs}"
        f" epochs; Mahalanobis covariance: {cfg.covariance}; knn k = {cfg.knn_k}."
        f" Wall time of this invocation {wall:.0f} s ({jax.default_backend()});"
        " per-seed compute recorded when each seed ran:"
        f" {sum(r.get('seed_wall_time_s', 0.0) for r in per_seed.values()):.0f} s"
        " wall in total (0 for seeds run before that was recorded), of which"
        " retraining + feature models"
        f" {compute:.0f} s.",
        "",
        "## Accuracy (%) vs fraction of the forget class deleted (mean ± std)",
        "",
        "| score | " + " | ".join(f"{int(100 * f)}%" for f in cfg.fractions) + " |",
        "|---|" + "---|" * len(cfg.fractions),
    ]
    for which, idx in (("forget", 0), ("other", 1)):
        for s, curve in curves.items():
            cells = []
            for f in cfg.fractions:
                v = [p[idx] for p in curve.get(float(f), [])]
                cells.append(
                    f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}" if v else "-"
                )
            lines.append(f"| {s} ({which}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Deletions needed to halve forget-class accuracy (Table 2, image row)",
        "",
        "| score | first measured fraction | interpolated | saving vs random |",
        "|---|---|---|---|",
    ]
    rand = halving.get("random", (None, None))[1]
    for s, (grid, interp) in halving.items():
        saving = (
            f"{100 * (1 - interp / rand):.0f}%"
            if rand and interp is not None and s != "random"
            else "-"
        )
        lines.append(
            f"| {s} | {'-' if grid is None else f'{100 * grid:.0f}%'} |"
            f" {'-' if interp is None else f'{100 * interp:.1f}%'} | {saving} |"
        )
    lines += [
        "",
        f"Paper (CIFAR-10 cat, 30 seeds): random {PAPER['random']}%, selective"
        f" ({PAPER['selective_score']}) {PAPER['selective']}%, saving"
        f" {PAPER['saving']}%.",
    ]
    checks = []
    sel = {s: v[1] for s, v in halving.items() if s != "random" and v[1] is not None}
    if rand is not None and sel:
        best = min(sel, key=sel.get)
        checks.append(
            (
                f"a selective score needs fewer deletions than random to halve"
                f" forget accuracy ({best}: {100 * sel[best]:.1f}% vs"
                f" {100 * rand:.1f}%)",
                sel[best] < rand,
            )
        )
        if "lr_maha" in sel:
            checks.append(
                (
                    f"lr_maha needs fewer deletions than random"
                    f" ({100 * sel['lr_maha']:.1f}% vs {100 * rand:.1f}%)",
                    sel["lr_maha"] < rand,
                )
            )
    other = [
        np.mean([p[1] for p in v])
        for c in curves.values()
        for f, v in c.items()
        if f < 1.0
    ]
    base_other = np.mean([p[1] for p in curves[cfg.scores[0]][0.0]])
    drift = 100 * max(abs(o - base_other) for o in other)
    checks.append(
        (
            f"other-class accuracy stable (max |change| {drift:.2f} points below"
            " full deletion; threshold 2)",
            drift <= 2.0,
        )
    )
    lines += ["", "## Claims", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {t}" for t, ok in checks]
    if drift > 2.0:
        # Name the worst (score, fraction) cell and its per-seed values.
        cells = [
            (abs(np.mean([p[1] for p in v]) - base_other), s, f, v)
            for s, c in curves.items()
            for f, v in c.items()
            if f < 1.0
        ]
        _, s, f, v = max(cells, key=lambda c: c[0])
        seeds = ", ".join(f"{100 * p[1]:.1f}" for p in v)
        median_ok = abs(np.median([p[1] for p in v]) - base_other) <= 0.02
        why = (
            " The median seed is within 2 points: one seed's retrain far from"
            " the others is training variance of this small CNN, not a"
            " systematic effect of the deletions."
            if median_ok
            else " Most seeds moved: the deletions do change the other classes here."
        )
        lines.append(
            f"  - Worst cell: {s} at {100 * f:.0f}% deletion, other-class accuracy"
            f" per seed {seeds} (no deletion: {100 * base_other:.1f}).{why}"
        )
    lines += [
        "",
        "Timing: every seed's retrainings run as vmapped programs of up to"
        f" {cfg.models_per_program} models; per seed:",
        "",
        "| seed | models | retrain run s | retrain compile s | feature model s |",
        "|---|---|---|---|---|",
    ]
    for seed, r in per_seed.items():
        lines.append(
            f"| {seed} | {r['num_models']} | {r['retrain_run_time_s']:.1f} |"
            f" {r['retrain_compile_time_s']:.1f} | {r['feature_model_time_s']:.1f} |"
        )
    plots = _plot(workdir, cfg, curves)
    lines += [""] + [f"![{p}]({p})" for p in plots]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return checks, halving


def run(cfg: Config, workdir: str, *, log=print) -> dict[str, Any]:
    os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
    t0 = time.perf_counter()
    cfg_json = json.loads(json.dumps(dataclasses.asdict(cfg), default=list))
    cfg_hash = cache.manifest_hash({"cfg": cfg_json, "versions": cache.versions()})
    rows, per_seed = [], {}
    for seed in cfg.seeds:
        path = os.path.join(workdir, "rows", f"seed{seed}.json")
        if os.path.exists(path):
            saved = json.load(open(path))
            if saved.get("cfg_hash") == cfg_hash:
                per_seed[seed] = saved["result"]
                rows += saved["result"]["rows"]
                log(f"[images] seed {seed}: reused {path}")
                continue
        t_seed = time.perf_counter()
        res = run_seed(cfg, seed, workdir, log)
        res["seed_wall_time_s"] = time.perf_counter() - t_seed
        cache.atomic_write_json(path, {"cfg_hash": cfg_hash, "result": res})
        per_seed[seed] = res
        rows += res["rows"]
    wall = time.perf_counter() - t0
    checks, halving = _report(cfg, workdir, rows, per_seed, wall)
    results = {
        "config": cfg_json,
        "rows": rows,
        "per_seed": {
            str(k): {kk: vv for kk, vv in v.items() if kk != "rows"}
            for k, v in per_seed.items()
        },
        "halving_fraction": {
            s: {"first_measured": g, "interpolated": i} for s, (g, i) in halving.items()
        },
        "checks": [{"claim": t, "holds": ok} for t, ok in checks],
        "paper": PAPER,
        "wall_time_s": wall,
        "versions": cache.versions(),
        "backend": jax.default_backend(),
    }
    cache.atomic_write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="cpu", help="cpu | full | smoke")
    p.add_argument("--workdir", default="runs/distributional_images")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (override)")
    args = p.parse_args(argv)
    cfg = get_config(args.config)
    if args.seeds:
        cfg.seeds = tuple(int(s) for s in args.seeds.split(","))
    res = run(cfg, args.workdir, log=lambda s: print(s, file=sys.stderr, flush=True))
    for c in res["checks"]:
        print(("PASS " if c["holds"] else "FAIL ") + c["claim"])
    print(f"wrote {args.workdir}/results.json, report.md ({res['wall_time_s']:.0f}s)")
    return res


if __name__ == "__main__":
    main()
