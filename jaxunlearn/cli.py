"""The ``jaxunlearn`` command: the main job.

``jaxunlearn compare`` trains (or loads from cache) the original and the
retrained model, runs the chosen unlearning methods, evaluates every model and
writes ``config.json``, ``manifest.json``, ``metrics.jsonl``, ``results.json``,
``report.md`` and ``compare.png`` to a workdir. Finished methods are kept in
``workdir/rows/`` so an interrupted run resumes where it stopped.

Example::

    jaxunlearn compare --dataset digits --model mlp --forget-classes 3
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxunlearn import cache, data, methods, models, train
from jaxunlearn import eval as ev

# Per-method recipes for the main job (learning rate, epochs, extra kwargs).
# Chosen for small models on small data (digits / Fashion-MNIST with an MLP);
# they are configuration, not results: override with --method-config.
# NegGrad has a cliff (forget accuracy collapses a few steps before everything
# else does), so its recipe is a small learning rate and a fixed step budget.
DEFAULT_RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {"learning_rate": 0.1, "epochs": 20},
    "neggrad": {"learning_rate": 0.001, "epochs": 12},
    "neggrad_plus": {"learning_rate": 0.02, "epochs": 5, "retain_weight": 0.99},
    "random_label": {"learning_rate": 0.01, "epochs": 2},
}


@dataclasses.dataclass
class CompareConfig:
    """Everything that determines a ``compare`` run."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    mode: str = "class"
    forget_classes: tuple[int, ...] = (3,)
    forget_fraction: float = 0.1
    methods: tuple[str, ...] = ("finetune", "neggrad", "neggrad_plus", "random_label")
    seed: int = 0
    training: train.TrainConfig = dataclasses.field(
        default_factory=lambda: train.TrainConfig(
            epochs=30, batch_size=64, learning_rate=0.05
        )
    )
    unlearn_batch_size: int = 64
    recipes: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_RECIPES.items()}
    )
    num_devices: int = 1
    standardize: bool = False


def _rows_table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("method", "method", "{}"),
        ("ACC_retain", "acc_retain", "{:.4f}"),
        ("ACC_forget", "acc_forget", "{:.4f}"),
        ("ACC_test", "acc_test", "{:.4f}"),
        ("MIA", "mia_accuracy", "{:.4f}"),
        ("time_s", "time", "{:.2f}"),
        ("compile_s", "compile_time", "{:.2f}"),
    ]
    head = "| " + " | ".join(c[0] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key, fmt in cols:
            v = r.get(key)
            cells.append("-" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = [
        ("acc_retain", "ACC retain"),
        ("acc_forget", "ACC forget"),
        ("acc_test", "ACC test"),
        ("mia_accuracy", "MIA acc"),
    ]
    names = [r["method"] for r in rows]
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6))
    for i, (k, label) in enumerate(keys):
        ax.bar(x + (i - 1.5) * width, [r[k] for r in rows], width, label=label)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.18))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _config_json(cfg: CompareConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def compare(
    cfg: CompareConfig, workdir: str, *, cache_dir: str | None, progress: bool = True
) -> dict[str, Any]:
    """Runs the main job and writes its outputs; returns the results dict."""
    unknown = [m for m in cfg.methods if m not in methods.names()]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; valid names: {methods.names()}.")
    os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
    cfg_json = _config_json(cfg)
    cache.atomic_write_json(os.path.join(workdir, "config.json"), cfg_json)

    ds = data.load(cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize)
    split = data.split(
        ds,
        cfg.mode,
        seed=cfg.seed,
        forget_classes=list(cfg.forget_classes) if cfg.mode == "class" else None,
        forget_fraction=cfg.forget_fraction,
    )
    model = models.get_model(cfg.model, split.num_classes)
    apply_fn = models.make_apply_fn(model)
    mesh = train.make_mesh(cfg.num_devices) if cfg.num_devices > 1 else None

    original, info_o = train.train_original(
        model,
        split,
        cfg.training,
        seed=cfg.seed,
        cache_dir=cache_dir,
        mesh=mesh,
        progress="original" if progress else False,
    )
    retrained, info_r = train.retrain(
        model,
        split,
        cfg.training,
        seed=cfg.seed + 1,
        cache_dir=cache_dir,
        mesh=mesh,
        progress="retrain" if progress else False,
    )
    manifest = {
        "config_hash": cache.manifest_hash(cfg_json),
        "split": split.summary(),
        "original": {"hash": info_o["hash"], "cache": info_o["cache"]},
        "retrain": {"hash": info_r["hash"], "cache": info_r["cache"]},
        "versions": cache.versions(),
        "device": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    cache.atomic_write_json(os.path.join(workdir, "manifest.json"), manifest)

    def evaluate(variables):
        return ev.evaluate_split(
            lambda x: train.predict(apply_fn, variables, x), split, mia_seed=cfg.seed
        )

    rows = []
    for name, variables, info in (
        ("original", original, info_o),
        ("retrain", retrained, info_r),
    ):
        row = {"method": name, **evaluate(variables)}
        row["time"] = info["run_time"]
        row["compile_time"] = info["compile_time"]
        row["cache"] = info["cache"]
        rows.append(row)

    metrics_path = os.path.join(workdir, "metrics.jsonl")
    key = jax.random.key(cfg.seed + 2)
    for i, name in enumerate(cfg.methods):
        recipe = dict(cfg.recipes.get(name, {}))
        row_key = cache.manifest_hash(
            {
                "cfg": cfg_json,
                "method": name,
                "recipe": recipe,
                "original": info_o["hash"],
            }
        )
        row_path = os.path.join(workdir, "rows", f"{name}.json")
        if os.path.exists(row_path):
            with open(row_path) as f:
                saved = json.load(f)
            if saved.get("row_key") == row_key:
                rows.append(saved["row"])
                continue
        epochs = int(recipe.pop("epochs", 1))
        method = methods.get(
            name,
            apply_fn=apply_fn,
            num_classes=split.num_classes,
            init_fn=lambda k: models.init(model, k, split.retain["image"][:1]),
            **recipe,
        )
        history: list[dict[str, float]] = []

        def log(epoch, m, state, _name=name, _history=history):
            del state
            _history.append(m)
            line = json.dumps({"method": _name, "epoch": epoch, **m})
            with open(metrics_path, "a") as f:
                f.write(line + "\n")

        result = train.unlearn(
            method,
            original,
            split,
            epochs=epochs,
            batch_size=cfg.unlearn_batch_size,
            key=jax.random.fold_in(key, i),
            mesh=mesh,
            progress=name if progress else False,
            callback=log,
        )
        row = {"method": name, **evaluate(result.variables)}
        row["time"] = result.run_time
        row["compile_time"] = result.compile_time
        row["epochs"] = epochs
        rows.append(row)
        cache.atomic_write_json(row_path, {"row_key": row_key, "row": row})

    results = {
        "config": cfg_json,
        "manifest": manifest,
        "rows": rows,
        "columns": {
            "acc_retain": "accuracy on the retain set",
            "acc_forget": "accuracy on the forget set (train examples)",
            "acc_test": "test accuracy (retained classes in class mode)",
            "mia_accuracy": "loss-based LR attack, forget vs unseen (0.5 = ideal)",
            "time": "seconds of unlearning (training for original / retrain),"
            " excluding compilation",
            "compile_time": "seconds spent compiling the epoch",
        },
    }
    cache.atomic_write_json(os.path.join(workdir, "results.json"), results)
    table = _rows_table(rows)
    has_plot = _plot(rows, os.path.join(workdir, "compare.png"))
    sizes = split.summary()["sizes"]
    report = [
        f"# jaxunlearn compare: {cfg.dataset} / {cfg.model} / {cfg.mode} forgetting",
        "",
        f"Forget classes: {list(cfg.forget_classes)}"
        if cfg.mode == "class"
        else f"Forget fraction: {cfg.forget_fraction}",
        f"Set sizes: {sizes}. Seed {cfg.seed}. Backend {jax.default_backend()}.",
        "",
        table,
        "",
        "MIA: logistic regression on per-example losses, forget (members) vs unseen"
        " test data (non-members), balanced sizes, 10 stratified splits; 0.5 means"
        " the forget set looks unseen.",
        "Times exclude compilation, which is reported separately.",
    ]
    if has_plot:
        report += ["", "![compare](compare.png)"]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(report) + "\n")
    return results


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints: {e}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxunlearn", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="train, unlearn with several methods, evaluate")
    d = CompareConfig()
    c.add_argument(
        "--dataset",
        default=d.dataset,
        help="digits | fashion_mnist | idx:DIR | npz:PATH | TFDS name",
    )
    c.add_argument("--data-dir", default=None)
    c.add_argument("--model", default=d.model, help=f"one of {models.names()}")
    c.add_argument("--mode", default=d.mode, choices=("class", "random", "group"))
    c.add_argument("--forget-classes", type=_parse_ints, default=d.forget_classes)
    c.add_argument("--forget-fraction", type=float, default=d.forget_fraction)
    c.add_argument(
        "--methods", default="all", help="comma-separated method names or 'all'"
    )
    c.add_argument("--seed", type=int, default=d.seed)
    c.add_argument(
        "--epochs",
        type=int,
        default=d.training.epochs,
        help="epochs of the original / retrained model",
    )
    c.add_argument("--batch-size", type=int, default=d.training.batch_size)
    c.add_argument("--lr", type=float, default=d.training.learning_rate)
    c.add_argument(
        "--unlearn-epochs",
        type=int,
        default=None,
        help="override every method's epochs",
    )
    c.add_argument(
        "--method-config",
        default=None,
        help='JSON overrides, e.g. \'{"neggrad": {"learning_rate": 0.02}}\'',
    )
    c.add_argument("--num-devices", type=int, default=1)
    c.add_argument("--standardize", action="store_true")
    c.add_argument("--workdir", default="runs/compare")
    c.add_argument(
        "--cache-dir",
        default=".cache/jaxunlearn",
        help="model cache; 'none' disables it",
    )
    c.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.methods == "all":
        names = tuple(n for n in methods.names() if n != "retrain")
    else:
        names = tuple(n.strip() for n in args.methods.split(",") if n.strip())
    recipes = {k: dict(v) for k, v in DEFAULT_RECIPES.items()}
    if args.method_config:
        for k, v in json.loads(args.method_config).items():
            recipes.setdefault(k, {}).update(v)
    if args.unlearn_epochs is not None:
        for n in names:
            recipes.setdefault(n, {})["epochs"] = args.unlearn_epochs
    cfg = CompareConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        mode=args.mode,
        forget_classes=args.forget_classes,
        forget_fraction=args.forget_fraction,
        methods=names,
        seed=args.seed,
        training=train.TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr
        ),
        recipes=recipes,
        num_devices=args.num_devices,
        standardize=args.standardize,
    )
    cache_dir = None if args.cache_dir.lower() == "none" else args.cache_dir
    t0 = time.perf_counter()
    results = compare(
        cfg, args.workdir, cache_dir=cache_dir, progress=not args.no_progress
    )
    print(_rows_table(results["rows"]))
    print(
        f"\nwrote {args.workdir}/{{config,manifest,results}}.json, report.md"
        f" ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
