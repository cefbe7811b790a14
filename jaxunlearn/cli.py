"""The ``jaxunlearn`` command: the main job.

``jaxunlearn compare`` trains (or loads from cache) the original and the
retrained model, runs the chosen unlearning methods, evaluates every model with
the metrics of the four papers (accuracies, DLFD's loss attack and NoMUS, the
loss-threshold ROC, UTV, SalUn/RWFT's SVC attack, MIA-NN, the Blend code's
phi-LR score, and LiRA / RMIA with vectorised shadow models) and writes
``config.json``, ``manifest.json``, ``metrics.jsonl``, ``results.json``,
``report.md`` and plots to a workdir. With several seeds, every number is
reported as mean +- std with a bootstrap confidence interval. Finished
(seed, method) pairs are kept in ``workdir/rows/`` so an interrupted run
resumes where it stopped.

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
# Chosen for small models on small data (digits with an MLP); they are
# configuration, not results: override with --method-config.
# NegGrad has a cliff (forget accuracy collapses a few steps before everything
# else does), so its recipe is a small learning rate and a fixed step budget.
DEFAULT_RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {"learning_rate": 0.1, "epochs": 20},
    "neggrad": {"learning_rate": 0.001, "epochs": 12},
    "neggrad_plus": {"learning_rate": 0.02, "epochs": 5, "retain_weight": 0.99},
    "random_label": {"learning_rate": 0.01, "epochs": 2},
    # RWFT paper, App. A.3: 10 epochs at learning rate 1e-3.
    "rwft_o": {"learning_rate": 1e-3, "epochs": 10},
    "rwft_2_o": {"learning_rate": 1e-3, "epochs": 10},
    "rw_a": {"learning_rate": 1e-3, "epochs": 10},
    "l1_sparse": {"learning_rate": 0.1, "epochs": 10, "alpha": 5e-4},
    "salun": {"learning_rate": 0.01, "epochs": 2},
    "boundary_shrink": {"learning_rate": 1e-3, "epochs": 10},
    "svd": {"epochs": 1},  # one-shot: the projection happens in init
}

DEFAULT_METRICS = (
    "accuracy",
    "mia_logreg",
    "nomus",
    "loss_threshold",
    "utv",
    "mia_svc",
    "mia_nn",
    "phi_logreg_auc",
    "lira",
    "rmia",
)

# (column title, value key, format) of the console / Markdown table.
TABLE = (
    ("ACC_retain", "acc_retain", "{:.4f}"),
    ("ACC_forget", "acc_forget", "{:.4f}"),
    ("ACC_test", "acc_test", "{:.4f}"),
    ("MIA", "mia_accuracy", "{:.4f}"),
    ("NoMUS", "nomus", "{:.4f}"),
    ("UTV", "utv", "{:.4f}"),
    ("SVC-MIA%", "mia_svc", "{:.1f}"),
    ("LiRA AUC", "lira_auc", "{:.4f}"),
    ("time_s", "time", "{:.2f}"),
    ("compile_s", "compile_time", "{:.2f}"),
)


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
    seeds: tuple[int, ...] = (0,)
    training: train.TrainConfig = dataclasses.field(
        default_factory=lambda: train.TrainConfig(
            epochs=30, batch_size=64, learning_rate=0.05
        )
    )
    unlearn_batch_size: int = 64
    recipes: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_RECIPES.items()}
    )
    metrics: tuple[str, ...] = DEFAULT_METRICS
    shadow_models: int = 16
    num_devices: int = 1
    standardize: bool = False


def _fmt(v, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):  # aggregated over seeds
        if v["n"] > 1 and np.isfinite(v["std"]):
            return f"{fmt.format(v['mean'])} ± {fmt.format(v['std'])}"
        return fmt.format(v["mean"])
    return fmt.format(v)


def rows_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of result rows (plain or aggregated over seeds)."""
    cols = [c for c in TABLE if any(c[1] in r for r in rows)]
    head = "| method | " + " | ".join(c[0] for c in cols) + " |"
    sep = "|---|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [_fmt(r.get(key), fmt) for _, key, fmt in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _config_json(cfg: CompareConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def _metrics_for(cfg: CompareConfig, split) -> tuple[str, ...]:
    chosen = list(cfg.metrics)
    if "mia_nn" in chosen and not (
        split.mode == "class" and len(split.forget_classes) == 1
    ):
        chosen.remove("mia_nn")  # defined for forgetting one class only
    if cfg.shadow_models < 2:
        chosen = [m for m in chosen if m not in ("lira", "rmia")]
    return tuple(chosen)


def _run_seed(cfg, seed, ds, workdir, cache_dir, progress, plots):
    split = data.split(
        ds,
        cfg.mode,
        seed=seed,
        forget_classes=list(cfg.forget_classes) if cfg.mode == "class" else None,
        forget_fraction=cfg.forget_fraction,
    )
    model = models.get_model(cfg.model, split.num_classes)
    apply_fn = models.make_apply_fn(model)
    mesh = train.make_mesh(cfg.num_devices) if cfg.num_devices > 1 else None
    tag = f"seed {seed}: "
    original, info_o = train.train_original(
        model,
        split,
        cfg.training,
        seed=seed,
        cache_dir=cache_dir,
        mesh=mesh,
        progress=tag + "original" if progress else False,
    )
    retrained, info_r = train.retrain(
        model,
        split,
        cfg.training,
        seed=seed + 1,
        cache_dir=cache_dir,
        mesh=mesh,
        progress=tag + "retrain" if progress else False,
    )
    metric_names = _metrics_for(cfg, split)
    shadow = None
    if cfg.shadow_models >= 2:
        pool, _ = ev.shadow_pool(split)
        shadow = train.train_shadow_models(
            model,
            pool,
            cfg.training,
            num_models=cfg.shadow_models,
            seed=seed + 1000,
            cache_dir=cache_dir,
            progress=tag + "shadows" if progress else False,
        )
    manifest = {
        "seed": seed,
        "split": split.summary(),
        "original": {"hash": info_o["hash"], "cache": info_o["cache"]},
        "retrain": {"hash": info_r["hash"], "cache": info_r["cache"]},
        "shadow": None
        if shadow is None
        else {
            "hash": shadow.hash,
            "cache": shadow.cache,
            "models": cfg.shadow_models,
            "compile_time": shadow.compile_time,
            "run_time": shadow.run_time,
        },
    }

    def evaluate(variables):
        return ev.evaluate(
            apply_fn,
            variables,
            split,
            metrics=metric_names,
            retrained=retrained,
            shadow=shadow,
            seed=seed,
        )

    rows, reports = [], {}
    for name, variables, info in (
        ("original", original, info_o),
        ("retrain", retrained, info_r),
    ):
        rep = evaluate(variables)
        reports[name] = (rep, variables)
        rows.append(
            {
                "method": name,
                **rep.values,
                "time": info["run_time"],
                "compile_time": info["compile_time"],
                "cache": info["cache"],
            }
        )

    cfg_json = _config_json(cfg)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    key = jax.random.key(seed + 2)
    for i, name in enumerate(cfg.methods):
        recipe = dict(cfg.recipes.get(name, {}))
        row_key = cache.manifest_hash(
            {
                "cfg": cfg_json,
                "seed": seed,
                "method": name,
                "recipe": recipe,
                "original": info_o["hash"],
                "metrics": metric_names,
            }
        )
        row_path = os.path.join(workdir, "rows", f"seed{seed}_{name}.json")
        rows_dir = os.path.join(workdir, "rows")
        saved_vars = None
        if os.path.exists(row_path):
            with open(row_path) as f:
                saved = json.load(f)
            if saved.get("row_key") == row_key:
                saved_vars = cache.load(rows_dir, {"row_key": row_key}, like=original)
        if saved_vars is not None:  # resume: re-evaluate the saved model
            variables = jax.tree.map(jax.numpy.asarray, saved_vars)
            rep = evaluate(variables)
            reports[name] = (rep, variables)
            timing = {k: saved["row"][k] for k in ("time", "compile_time", "epochs")}
            rows.append({"method": name, **rep.values, **timing, "resumed": True})
            continue
        epochs = int(recipe.pop("epochs", 1))
        method = methods.get(
            name,
            apply_fn=apply_fn,
            num_classes=split.num_classes,
            init_fn=lambda k: models.init(model, k, split.retain["image"][:1]),
            forget_classes=split.forget_classes or None,
            example_input=split.retain["image"][:1],
            forget_set=split.forget,
            retain_set=split.retain,
            **recipe,
        )

        def log(epoch, m, state, _name=name):
            del state
            line = json.dumps({"seed": seed, "method": _name, "epoch": epoch, **m})
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
            progress=tag + name if progress else False,
            callback=log,
        )
        variables = jax.device_get(result.variables)
        rep = evaluate(variables)
        reports[name] = (rep, variables)
        row = {
            "method": name,
            **rep.values,
            "time": result.run_time,
            "compile_time": result.compile_time,
            "epochs": epochs,
        }
        rows.append(row)
        cache.save(rows_dir, {"row_key": row_key}, variables)
        cache.atomic_write_json(row_path, {"row_key": row_key, "row": row})
    if plots:
        _plots(workdir, split, apply_fn, reports, shadow)
    return rows, manifest


def _plots(workdir, split, apply_fn, reports, shadow) -> None:
    """Loss histograms, confusion matrices and feature embeddings per model."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # plots are optional ([experiments] extra)
        return
    names = list(reports)
    n = len(names)
    cols = min(3, n)
    rows_ = -(-n // cols)
    figs = {
        k: Figure(figsize=(4.2 * cols, 3.4 * rows_), layout="constrained")
        for k in ("loss_hist", "confusion", "embedding")
    }
    axes = {k: f.subplots(rows_, cols, squeeze=False).ravel() for k, f in figs.items()}
    test = split.test
    rng = np.random.default_rng(0)
    sub = rng.choice(len(test["label"]), min(600, len(test["label"])), replace=False)
    n_f = len(split.forget["label"])
    fsub = rng.choice(n_f, min(300, n_f), replace=False)
    emb_x = np.concatenate([test["image"][sub], split.forget["image"][fsub]])
    emb_y = np.concatenate([test["label"][sub], split.forget["label"][fsub]])
    highlight = np.arange(len(emb_y)) >= len(sub)
    roc_curves = {}
    for i, name in enumerate(names):
        rep, variables = reports[name]
        ev.plot_loss_histograms(
            rep.arrays["forget_losses"],
            rep.arrays["unseen_losses"],
            ax=axes["loss_hist"][i],
            title=name,
            log_x=True,
        )
        logits = train.predict(apply_fn, variables, test["image"])
        cm = ev.confusion_matrix(logits, test["label"], split.num_classes)
        ev.plot_confusion(cm, ax=axes["confusion"][i], title=name)
        (_, feats), _ = apply_fn(variables, emb_x, train=False, return_features=True)
        ev.plot_embedding(
            np.asarray(feats),
            emb_y,
            highlight=highlight,
            ax=axes["embedding"][i],
            title=f"{name} (forget ringed)",
        )
        scores = -np.concatenate(
            [rep.arrays["forget_losses"], rep.arrays["unseen_losses"]]
        )
        member = np.arange(len(scores)) < len(rep.arrays["forget_losses"])
        roc_curves[name] = (scores, member)
    for k in figs:
        for ax in axes[k][n:]:
            ax.set_visible(False)
        ev.save_figure(figs[k], os.path.join(workdir, f"{k}.png"))
    ev.save_figure(
        ev.plot_roc(
            roc_curves, log=True, title="loss attack, forget vs unseen (log ROC)"
        ),
        os.path.join(workdir, "roc_log.png"),
    )


def _aggregate_rows(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, first in enumerate(per_seed[0]):
        runs = [rows[i] for rows in per_seed]
        numeric = [
            {
                k: v
                for k, v in r.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            for r in runs
        ]
        out.append({"method": first["method"], **ev.aggregate(numeric)})
    return out


def compare(
    cfg: CompareConfig,
    workdir: str,
    *,
    cache_dir: str | None,
    progress: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Runs the main job and writes its outputs; returns the results dict."""
    unknown = [m for m in cfg.methods if m not in methods.names()]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; valid names: {methods.names()}.")
    bad = [m for m in cfg.metrics if m not in ev.metric_names()]
    if bad:
        raise ValueError(f"unknown metrics {bad}; valid: {ev.metric_names()}.")
    if not cfg.seeds:
        raise ValueError("seeds must name at least one seed.")
    os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
    cfg_json = _config_json(cfg)
    cache.atomic_write_json(os.path.join(workdir, "config.json"), cfg_json)
    ds = data.load(cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize)

    per_seed, manifests = [], []
    for j, seed in enumerate(cfg.seeds):
        rows, manifest = _run_seed(
            cfg, seed, ds, workdir, cache_dir, progress, plots=plots and j == 0
        )
        per_seed.append(rows)
        manifests.append(manifest)
    manifest = {
        "config_hash": cache.manifest_hash(cfg_json),
        "seeds": manifests,
        "versions": cache.versions(),
        "device": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    cache.atomic_write_json(os.path.join(workdir, "manifest.json"), manifest)
    aggregated = _aggregate_rows(per_seed) if len(cfg.seeds) > 1 else None
    shown = aggregated if aggregated is not None else per_seed[0]
    results = {
        "config": cfg_json,
        "manifest": manifest,
        "rows": per_seed[0] if len(cfg.seeds) == 1 else None,
        "rows_per_seed": {str(s): r for s, r in zip(cfg.seeds, per_seed, strict=True)},
        "aggregate": aggregated,
        "metric_versions": {m: "1" for m in cfg.metrics},
        "columns": {
            "acc_*": "accuracies; acc_test covers retained classes in class mode",
            "mia_accuracy": "DLFD loss attack (LR on losses), forget vs unseen;"
            " 0.5 = ideal",
            "nomus": "(acc_test + 1 - 2|mia_accuracy - 0.5|) / 2",
            "utv": "total variation to the retrained model on the forget set",
            "mia_svc": "SalUn/RWFT SVC attack: % of forget predicted non-member",
            "lira_auc": "LiRA (shadow models), forget vs unseen; 0.5 = ideal",
            "time": "seconds of unlearning (training for original / retrain),"
            " excluding compilation",
            "compile_time": "seconds spent compiling",
        },
    }
    cache.atomic_write_json(os.path.join(workdir, "results.json"), results)
    table = rows_table(shown)
    bar_rows = [
        {
            "method": r["method"],
            **{
                k: (r[k]["mean"] if isinstance(r.get(k), dict) else r.get(k))
                for k in ("acc_retain", "acc_forget", "acc_test", "mia_accuracy")
            },
        }
        for r in shown
    ]
    has_plot = False
    if plots:
        try:
            fig = ev.plot_metric_bars(
                bar_rows,
                ["acc_retain", "acc_forget", "acc_test", "mia_accuracy"],
                title=f"{cfg.dataset} / {cfg.model} / {cfg.mode} forgetting",
            )
            ev.save_figure(fig, os.path.join(workdir, "compare.png"))
            has_plot = True
        except ImportError:
            pass
    sizes = manifests[0]["split"]["sizes"]
    target = (
        f"Forget classes: {list(cfg.forget_classes)}"
        if cfg.mode == "class"
        else f"Forget fraction: {cfg.forget_fraction}"
    )
    report = [
        f"# jaxunlearn compare: {cfg.dataset} / {cfg.model} / {cfg.mode} forgetting",
        "",
        f"{target}. Set sizes (seed {cfg.seeds[0]}): {sizes}. Seeds"
        f" {list(cfg.seeds)}. Shadow models: {cfg.shadow_models}. Backend"
        f" {jax.default_backend()}.",
        "",
        table,
        "",
        "MIA: DLFD's logistic regression on per-example losses, forget (members) vs"
        " unseen test data (non-members; the forgotten classes in class mode),"
        " balanced sizes, 10 stratified splits; 0.5 means the forget set looks"
        " unseen. NoMUS = (ACC_test + 1 - 2|MIA - 0.5|) / 2. UTV: total variation"
        " to the retrained model's outputs on the forget set (0 = identical)."
        " SVC-MIA%: percent of forget examples an SVC on true-class confidence"
        " (retain-train vs test) calls non-member (retrain is about 100). LiRA"
        " AUC: likelihood-ratio attack with shadow models, forget vs unseen.",
        "Times exclude compilation, which is reported separately.",
    ]
    if len(cfg.seeds) > 1:
        report.append(
            "Values are mean ± std over seeds; results.json holds 95%"
            " bootstrap confidence intervals."
        )
    if has_plot:
        report += ["", "![compare](compare.png)"]
        for name in ("loss_hist", "roc_log", "confusion", "embedding"):
            if os.path.exists(os.path.join(workdir, f"{name}.png")):
                report.append(f"![{name}]({name}.png)")
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(report) + "\n")
    results["table"] = table
    return results


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib import metadata

    try:
        return metadata.version("jaxunlearn")
    except metadata.PackageNotFoundError:
        import jaxunlearn

        return jaxunlearn.__version__


class UsageError(ValueError):
    """A mistake on the command line; ``main`` prints it as one line, exit 2."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"argument {option}: {' '.join(str(message).split())}")


class _Parser(argparse.ArgumentParser):
    """Reports every parse error as one line on stderr and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _ints(text: str, what: str) -> tuple[int, ...]:
    parts = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(int(t) for t in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {what}, e.g. 0,3; got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one {what[:-1]}")
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{what} repeat a value: {text!r}")
    return values


def _parse_classes(text: str) -> tuple[int, ...]:
    return _ints(text, "class labels")


def _parse_seeds(text: str) -> tuple[int, ...]:
    return _ints(text, "seeds")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}"
            ) from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a finite number > 0, got {text!r}"
        ) from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _open_fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return v


def _check_dir_option(option: str, path: str) -> None:
    """``path`` is a directory, or can be created as one; else a UsageError."""
    if not path:
        raise UsageError(option, "must not be empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(option, f"{path!r} exists and is not a directory")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(option, f"cannot create {path!r}: {parent!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            option, f"cannot create or write {path!r}: {parent!r} is not writable"
        )


def _library_check(option: str, fn, *args, **kwargs):
    """Calls library validation; its ValueError / TypeError becomes a UsageError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(option, str(e)) from e


def validate_args(args: argparse.Namespace) -> tuple[CompareConfig, str | None]:
    """Checks a parsed ``compare`` command line before anything trains.

    Resolves ``--methods``, ``--metrics`` and ``--method-config``, checks the
    workdir and cache paths, loads the data set, builds the split of the first
    seed and the model, and builds every selected method with
    :func:`jaxunlearn.methods.get` from its recipe (so a misspelt
    hyperparameter fails here, not after training).

    Returns:
        The :class:`CompareConfig` and the cache directory (None: no cache).

    Raises:
        UsageError: naming the option at fault and the valid choices.
    """
    valid_methods = methods.names()
    if args.methods.strip() == "all":
        names = tuple(
            n
            for n in valid_methods
            if n != "retrain"
            and (args.mode == "class" or not methods.needs_forget_classes(n))
        )
    else:
        names = tuple(n.strip() for n in args.methods.split(",") if n.strip())
        unknown = [n for n in names if n not in valid_methods]
        if unknown:
            raise UsageError(
                "--methods",
                f"unknown method(s) {unknown}; valid: 'all' or a comma-separated"
                f" list of {list(valid_methods)}",
            )
        if not names:
            raise UsageError(
                "--methods",
                f"no method named; valid: 'all' or"
                f" a comma-separated list of {list(valid_methods)}",
            )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UsageError("--methods", f"method(s) {dup} named more than once")
        if args.mode != "class":
            class_only = [n for n in names if methods.needs_forget_classes(n)]
            if class_only:
                raise UsageError(
                    "--methods",
                    f"{class_only} forget whole classes and need --mode class"
                    f" (got --mode {args.mode})",
                )

    valid_metrics = ev.metric_names()
    metrics_given = args.metrics is not None
    metric_list = (
        tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        if metrics_given
        else DEFAULT_METRICS
    )
    bad = [m for m in metric_list if m not in valid_metrics]
    if bad or not metric_list:
        what = f"unknown metric(s) {bad}" if bad else "no metric named"
        raise UsageError(
            "--metrics",
            f"{what}; valid: a comma-separated list of {list(valid_metrics)}",
        )
    shadow_metrics = [m for m in metric_list if m in ("lira", "rmia")]
    if (
        shadow_metrics
        and args.shadow_models < 2
        and (metrics_given or args.shadow_models == 1)
    ):
        raise UsageError(
            "--shadow-models",
            f"{shadow_metrics} need at least 2 shadow models, got"
            f" {args.shadow_models}; pass >= 2, or 0 without them in --metrics",
        )

    recipes = {k: dict(v) for k, v in DEFAULT_RECIPES.items()}
    configured: set[str] = set()
    if args.method_config is not None:
        try:
            overrides = json.loads(args.method_config)
        except json.JSONDecodeError as e:
            raise UsageError("--method-config", f"invalid JSON: {e}") from None
        if not isinstance(overrides, dict) or not all(
            isinstance(v, dict) for v in overrides.values()
        ):
            raise UsageError(
                "--method-config",
                'expected a JSON object of objects, e.g. \'{"neggrad":'
                ' {"learning_rate": 0.02}}\'',
            )
        for k, v in overrides.items():
            if k not in valid_methods:
                raise UsageError(
                    "--method-config",
                    f"unknown method {k!r}; valid: {list(valid_methods)}",
                )
            if k not in names:
                raise UsageError(
                    "--method-config",
                    f"configures {k!r}, which --methods does not select"
                    f" (selected: {list(names)})",
                )
            recipes.setdefault(k, {}).update(v)
            configured.add(k)
    if args.unlearn_epochs is not None:
        for n in names:
            recipes.setdefault(n, {})["epochs"] = args.unlearn_epochs
    for n in names:
        epochs = recipes.get(n, {}).get("epochs", 1)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise UsageError(
                "--method-config",
                f"{n}: 'epochs' must be an integer >= 1, got {epochs!r}",
            )

    if args.mode != "class" and args.forget_classes is not None:
        raise UsageError(
            "--forget-classes", f"applies only to --mode class (got --mode {args.mode})"
        )
    if args.data_dir is not None and "://" not in args.data_dir:
        if not os.path.isdir(args.data_dir):
            raise UsageError("--data-dir", f"{args.data_dir!r} is not a directory")
    _check_dir_option("--workdir", args.workdir)
    cache_dir = None if args.cache_dir.lower() == "none" else args.cache_dir
    if cache_dir is not None:
        _check_dir_option("--cache-dir", cache_dir)
    if args.num_devices > 1 and args.num_devices > len(jax.devices()):
        raise UsageError(
            "--num-devices",
            f"{args.num_devices} requested but {len(jax.devices())} device(s) are"
            f" available ({jax.default_backend()})",
        )

    d = CompareConfig()
    cfg = CompareConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        mode=args.mode,
        forget_classes=(
            args.forget_classes if args.forget_classes is not None else d.forget_classes
        ),
        forget_fraction=args.forget_fraction,
        methods=names,
        seeds=args.seeds,
        training=_library_check(
            "--lr",
            train.TrainConfig,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
        ),
        recipes=recipes,
        metrics=metric_list,
        shadow_models=args.shadow_models,
        num_devices=args.num_devices,
        standardize=args.standardize,
    )

    try:
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize)
    except (ValueError, TypeError, OSError, ImportError) as e:
        raise UsageError("--dataset", f"cannot load {cfg.dataset!r}: {e}") from e
    if cfg.mode == "class":
        split = _library_check(
            "--forget-classes",
            data.split,
            ds,
            "class",
            seed=cfg.seeds[0],
            forget_classes=list(cfg.forget_classes),
        )
    else:  # group mode clusters; a random split of the same size is enough here
        split = _library_check(
            "--forget-fraction",
            data.random_split,
            ds,
            cfg.forget_fraction,
            seed=cfg.seeds[0],
        )
    model = _library_check("--model", models.get_model, cfg.model, split.num_classes)
    apply_fn = models.make_apply_fn(model)
    example = split.retain["image"][:1]
    for n in names:
        recipe = {k: v for k, v in recipes.get(n, {}).items() if k != "epochs"}
        _library_check(
            "--method-config" if n in configured else "--methods",
            methods.get,
            n,
            apply_fn=apply_fn,
            num_classes=split.num_classes,
            init_fn=lambda k: models.init(model, k, example),
            forget_classes=split.forget_classes or None,
            example_input=example,
            forget_set=split.forget,
            retain_set=split.retain,
            **recipe,
        )
    return cfg, cache_dir


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxunlearn", description=__doc__.split("\n")[0])
    p.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {_version()}",
        help="print the version and exit",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "compare",
        help="train, unlearn with several methods, evaluate",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    d = CompareConfig()
    c.add_argument(
        "--dataset",
        default=d.dataset,
        help="digits | fashion_mnist | idx:DIR | npz:PATH | tfds:NAME | one of"
        " cifar10, cifar100, emnist, kmnist, mnist, svhn_cropped"
        " (default: %(default)s)",
    )
    c.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the data set's files (fashion_mnist IDX files,"
        " prepared TFDS data); default: the source's own location",
    )
    c.add_argument(
        "--model",
        default=d.model,
        choices=models.names(),
        help="network to train (default: %(default)s)",
    )
    c.add_argument(
        "--mode",
        default=d.mode,
        choices=("class", "random", "group"),
        help="what to forget: whole classes, a random fraction of the training"
        " examples, or clustered groups (default: %(default)s)",
    )
    c.add_argument(
        "--forget-classes",
        type=_parse_classes,
        default=None,
        help="comma-separated class labels to forget, --mode class only"
        f" (default: {','.join(map(str, d.forget_classes))})",
    )
    c.add_argument(
        "--forget-fraction",
        type=_open_fraction,
        default=d.forget_fraction,
        help="fraction in (0, 1) of the training examples (random) or groups"
        " (group) to forget (default: %(default)s)",
    )
    c.add_argument(
        "--methods",
        default="all",
        help="comma-separated method names or 'all' (default; the class-only"
        f" methods need --mode class); from {list(methods.names())}",
    )
    c.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {list(ev.metric_names())} (default: all of them)"
        if set(d.metrics) == set(ev.metric_names())
        else f"comma-separated, from {list(ev.metric_names())}"
        f" (default: {','.join(d.metrics)})",
    )
    c.add_argument(
        "--seeds",
        type=_parse_seeds,
        default=d.seeds,
        help="comma-separated seeds >= 0; several give mean ± std (default: 0)",
    )
    c.add_argument(
        "--shadow-models",
        type=_int_at_least(0),
        default=d.shadow_models,
        help="shadow models for LiRA / RMIA: >= 2, or 0 to disable them"
        " (default: %(default)s)",
    )
    c.add_argument(
        "--epochs",
        type=_int_at_least(1),
        default=d.training.epochs,
        help="epochs of the original / retrained model (default: %(default)s)",
    )
    c.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=d.training.batch_size,
        help="batch size of the original / retrained model (default: %(default)s)",
    )
    c.add_argument(
        "--lr",
        type=_positive_float,
        default=d.training.learning_rate,
        help="learning rate of the original / retrained model (default: %(default)s)",
    )
    c.add_argument(
        "--unlearn-epochs",
        type=_int_at_least(1),
        default=None,
        help="override every method's epochs",
    )
    c.add_argument(
        "--method-config",
        default=None,
        help="JSON overrides of the selected methods' recipes, e.g."
        ' \'{"neggrad": {"learning_rate": 0.02}}\'',
    )
    c.add_argument(
        "--num-devices",
        type=_int_at_least(1),
        default=1,
        help="devices to shard batches over (default: %(default)s)",
    )
    c.add_argument(
        "--standardize",
        action="store_true",
        help="standardise images per channel with train-set statistics",
    )
    c.add_argument(
        "--workdir",
        default="runs/compare",
        help="output directory; finished rows there are resumed (default: %(default)s)",
    )
    c.add_argument(
        "--cache-dir",
        default=".cache/jaxunlearn",
        help="model cache; 'none' disables it (default: %(default)s)",
    )
    c.add_argument(
        "--no-progress", action="store_true", help="do not show progress bars"
    )
    c.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    A user error (bad option value, unknown name, unusable path) prints one
    line to stderr and returns 2 before anything trains.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line parse error
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        cfg, cache_dir = validate_args(args)
    except UsageError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = compare(
        cfg,
        args.workdir,
        cache_dir=cache_dir,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    print(results["table"])
    print(
        f"\nwrote {args.workdir}/{{config,manifest,results}}.json, report.md"
        f" ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
