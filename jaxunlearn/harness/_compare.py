"""The main job behind ``jaxunlearn compare``, on the run harness.

Trains (or loads from cache) the original and the retrained model, runs the
chosen unlearning methods, evaluates every model and writes the run directory
(:class:`~jaxunlearn.harness.RunDir`). A finished (seed, method) pair is a row
whose key hashes its config fields, recipe, seed, split / model hashes and
package versions, never the lists of seeds or methods, so adding a seed or a
method recomputes nothing already finished. A diverged or collapsed method is
a flagged row, not a crash.
"""

import dataclasses
import os
import zlib
from typing import Any

import jax
import numpy as np

from jaxunlearn import cache, data, methods, models, train
from jaxunlearn import eval as ev
from jaxunlearn.harness._run import RunDir
from jaxunlearn.harness._tables import row_flag, table

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
    # DLFD is one epoch in the paper; on digits the forget class needs more
    # (dynamic forgetting turns it into fine-tuning once the monitor is at chance).
    "dlfd": {"learning_rate": 0.1, "epochs": 5, "perturb_steps": 3},
    # CF-k (head only) forgets by drift alone, so it needs a large rate.
    "cf_k": {"learning_rate": 0.5, "epochs": 5, "k": 1},
    "eu_k": {"learning_rate": 0.05, "epochs": 3, "k": 1},
    # DLFD code: Adam 1e-3; impair the first third of the run, then repair.
    "unsir": {"learning_rate": 1e-3, "epochs": 3},
    # Bad Teacher paper: Adam lr 1e-4 (our epoch is a full retain pass).
    "bad_teacher": {"learning_rate": 1e-4, "epochs": 3},
    # SCRUB: 2 max-phase epochs; lr 1e-3 (the paper's 5e-4 is too slow here).
    "scrub": {"learning_rate": 1e-2, "epochs": 5, "msteps": 2},
    # Blend + A-AMU repository baselines. Pruning: its lr 0.04; 10 epochs prune
    # at epochs 0 and 5 (to 95% of the MLP's kernels). Bad distillation: its
    # lr 1e-2, T = 2. SSD and Fisher forgetting are one-shot (edit in init).
    "pruning": {"learning_rate": 0.04, "epochs": 10},
    "bad_distillation": {"learning_rate": 1e-2, "epochs": 2},
    "ssd": {"epochs": 1},
    "fisher": {"epochs": 1},
    # A-AMU (Adam): the paper's 2.4e-4 for one epoch is tuned for ResNets on
    # 45k-image CIFAR-10 epochs; a digits epoch is 20 steps, so more of both.
    "a_cf": {"learning_rate": 2e-3, "epochs": 5},
    "a_scrub": {"learning_rate": 2e-3, "epochs": 5},
    "a_l1": {"learning_rate": 2e-3, "epochs": 5},
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

# (column title, value key, format spec) of the console / Markdown table.
TABLE = (
    ("ACC_retain", "acc_retain", ".4f"),
    ("ACC_forget", "acc_forget", ".4f"),
    ("ACC_test", "acc_test", ".4f"),
    ("MIA", "mia_accuracy", ".4f"),
    ("NoMUS", "nomus", ".4f"),
    ("UTV", "utv", ".4f"),
    ("SVC-MIA%", "mia_svc", ".1f"),
    ("LiRA AUC", "lira_auc", ".4f"),
    ("time_s", "time", ".2f"),
    ("compile_s", "compile_time", ".2f"),
    ("tuned", "tuned_text", "s"),
)

# Accuracy on the retained data within this of chance: the method collapsed.
COLLAPSE_TOLERANCE = 0.02


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
    # --tune: each method's sweepable hyperparameters are chosen first by a
    # vmapped sweep (train.sweep) against the retrained model on the val split.
    tune: bool = False
    tune_grids: dict[str, dict[str, list[float]]] = dataclasses.field(
        default_factory=dict
    )
    tune_select: dict[str, float] = dataclasses.field(
        default_factory=lambda: {t: 1.0 for t in train.SelectionRule().weights}
    )


# Default tuning grid: the recipe's learning rate times these factors.
TUNE_FACTORS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# Config fields that only matter (and only enter a row's key) when tuning.
_TUNE_FIELDS = ("tune", "tune_grids", "tune_select")


def tune_grid(
    name: str, method: methods.Method, variables: Any, cfg: CompareConfig
) -> dict[str, list[float]] | None:
    """The grid ``compare --tune`` / ``jaxunlearn tune`` sweeps for ``name``.

    ``cfg.tune_grids[name]`` when given; else the method's learning rate
    (from its recipe, or its default) times :data:`TUNE_FACTORS`; None when
    the method has no sweepable learning rate (one-shot edits such as ``svd``).
    """
    if name in cfg.tune_grids:
        return {k: [float(x) for x in v] for k, v in cfg.tune_grids[name].items()}
    if "learning_rate" not in train.sweepable(method, variables):
        return None
    lr = cfg.recipes.get(name, {}).get("learning_rate")
    if lr is None:  # the method's own default
        state = method.init(
            variables, key=jax.random.key(0), num_steps=1, steps_per_epoch=1
        )
        lr = float(state.hparams["learning_rate"])
    return {"learning_rate": [float(f"{lr * f:.6g}") for f in TUNE_FACTORS]}


def tune_method(
    name, method, split, original, retrained, apply_fn, cfg, *, epochs, key,
    progress=False,
) -> train.SweepResult | None:  # fmt: skip
    """Runs the sweep of one method (None: nothing to tune)."""
    grid = tune_grid(name, method, original, cfg)
    if grid is None:
        return None
    mesh = None
    if cfg.num_devices > 1:
        mesh = train.make_mesh(cfg.num_devices, axis="replica")
    return train.sweep(
        method,
        grid,
        split,
        variables=original,
        retrained=retrained,
        apply_fn=apply_fn,
        epochs=epochs,
        batch_size=cfg.unlearn_batch_size,
        key=key,
        select=train.SelectionRule(weights=dict(cfg.tune_select)),
        mesh=mesh,
        progress=progress,
    )


def rows_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of result rows (plain or aggregated over seeds).

    Examples:
      >>> print(rows_table([{"method": "a", "acc_retain": 0.5, "flag": None}]))
      | method | ACC_retain |
      |---|---|
      | a | 0.5000 |
    """
    return table(rows, TABLE)


def _metrics_for(cfg: CompareConfig, split) -> tuple[str, ...]:
    chosen = list(cfg.metrics)
    if "mia_nn" in chosen and not (
        split.mode == "class" and len(split.forget_classes) == 1
    ):
        chosen.remove("mia_nn")  # defined for forgetting one class only
    if cfg.shadow_models < 2:
        chosen = [m for m in chosen if m not in ("lira", "rmia")]
    return tuple(chosen)


def _flag(values: dict[str, Any], num_classes: int) -> str | None:
    return row_flag(
        values,
        keys=[k for k in ("acc_retain", "acc_forget", "acc_test") if k in values],
        accuracy_key="acc_retain",
        chance=1.0 / num_classes,
        tolerance=COLLAPSE_TOLERANCE,
    )


def _method_key(seed_key, name: str):
    """The unlearning key of one method: independent of the list of methods."""
    return jax.random.fold_in(seed_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _seed_models(cfg, seed, ds, cache_dir, progress):
    """The split, model and (cached) original / retrained models of a seed."""
    split = data.split(
        ds,
        cfg.mode,
        seed=seed,
        forget_classes=list(cfg.forget_classes) if cfg.mode == "class" else None,
        forget_fraction=cfg.forget_fraction,
    )
    model = models.get_model(cfg.model, split.num_classes)
    mesh = train.make_mesh(cfg.num_devices) if cfg.num_devices > 1 else None
    tag = f"seed {seed}: "
    common = dict(cache_dir=cache_dir, mesh=mesh)
    original, info_o = train.train_original(
        model, split, cfg.training, seed=seed, **common,
        progress=tag + "original" if progress else False,
    )  # fmt: skip
    retrained, info_r = train.retrain(
        model, split, cfg.training, seed=seed + 1, **common,
        progress=tag + "retrain" if progress else False,
    )  # fmt: skip
    return split, model, mesh, (original, info_o), (retrained, info_r)


def _build_method(name, recipe, split, model):
    """``methods.get`` with the compare job's context (recipe minus epochs)."""
    example = split.retain["image"][:1]
    return methods.get(
        name,
        apply_fn=models.make_apply_fn(model),
        num_classes=split.num_classes,
        init_fn=lambda k: models.init(model, k, example),
        forget_classes=split.forget_classes or None,
        example_input=example,
        forget_set=split.forget,
        retain_set=split.retain,
        val_set=split.val,
        unseen_set=split.val,
        **{k: v for k, v in recipe.items() if k != "epochs"},
    )


def _run_seed(cfg, seed, ds, run: RunDir, cache_dir, progress, plots):
    split, model, mesh, (original, info_o), (retrained, info_r) = _seed_models(
        cfg, seed, ds, cache_dir, progress
    )
    apply_fn = models.make_apply_fn(model)
    tag = f"seed {seed}: "
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
    summary = split.summary()
    manifest = {
        "seed": seed,
        "split": summary,
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

    def logits_of(variables):
        return lambda x: train.predict(apply_fn, variables, x)

    def evaluate(variables):
        return ev.evaluate(
            logits_of(variables),
            split,
            metrics=metric_names,
            retrained_logits_fn=logits_of(retrained),
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
                "flag": _flag(rep.values, split.num_classes),
            }
        )

    seed_key = jax.random.key(seed + 2)
    for name in cfg.methods:
        recipe = dict(cfg.recipes.get(name, {}))
        row_name = f"seed{seed}_{name}"
        tuning = None
        if cfg.tune:
            rule = train.SelectionRule(weights=dict(cfg.tune_select))
            tuning = {
                "grid": cfg.tune_grids.get(name),
                "select": rule.to_json()["weights"],  # normalised: missing = 0
            }
        fields = run.fields(
            exclude=("seeds", "methods", "recipes", "data_dir", *_TUNE_FIELDS),
            **({} if tuning is None else {"tuning": tuning}),
            seed=seed,
            method=name,
            recipe=recipe,
            metrics_run=list(metric_names),
            split=summary.get("hashes"),
            original=info_o["hash"],
            retrain=info_r["hash"],
            shadow=None if shadow is None else shadow.hash,
        )
        key = run.row_key(fields)
        saved = run.load_row(row_name, key)
        if saved is not None:  # resume; the model is reloaded only for plots
            run.resumed.append(row_name)
            if plots:
                loaded = run.load_variables(key)
                if loaded is not None:
                    variables = jax.tree.map(jax.numpy.asarray, loaded)
                    reports[name] = (evaluate(variables), variables)
            rows.append({**saved, "resumed": True})
            continue
        run.reset_metrics(row_name)
        epochs = int(recipe.pop("epochs", 1))
        method = _build_method(name, recipe, split, model)
        tuned, tune_info = None, {}
        if cfg.tune:
            try:
                sw = tune_method(
                    name, method, split, original, retrained, apply_fn, cfg,
                    epochs=epochs, key=_method_key(seed_key, name),
                    progress=tag + f"tune {name}" if progress else False,
                )  # fmt: skip
            except FloatingPointError as e:  # every point diverged: the recipe
                sw, tune_info = None, {"tune_error": str(e)}
            if sw is not None:
                tuned = sw.best
                path = run.path("tune", f"seed{seed}_{name}.json")
                cache.atomic_write_json(path, sw.to_json())
                tune_info = {
                    "tune_score": sw.scores[sw.best_index],
                    "tune_time": sw.run_time,
                    "tune_compile_time": sw.compile_time,
                    "tune_points": len(sw.points),
                }

        def log(epoch, m, state, _row=row_name, _name=name):
            del state
            run.log_metrics(_row, {"seed": seed, "method": _name, "epoch": epoch, **m})

        result = train.unlearn(
            method,
            original,
            split,
            epochs=epochs,
            batch_size=cfg.unlearn_batch_size,
            key=_method_key(seed_key, name),
            mesh=mesh,
            hparams=tuned,
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
            "flag": _flag(rep.values, split.num_classes),
        }
        if cfg.tune:
            row.update(tuned=tuned, tuned_text=_fmt_point(tuned) or "-", **tune_info)
        run.save_row(row_name, key, row, fields=fields, variables=variables)
        run.computed.append(row_name)
        rows.append(row)
    if plots:
        _plots(run.workdir, split, apply_fn, reports)
    return rows, manifest


def _plots(workdir, split, apply_fn, reports) -> None:
    """Loss histograms, confusion matrices and feature embeddings per model.

    Models without per-example losses (diverged: non-finite logits) are left
    out of every figure.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:  # plots are optional ([experiments] extra)
        return
    names = [n for n, (rep, _) in reports.items() if "forget_losses" in rep.arrays]
    if not names:
        return
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
        feats = train.predict(apply_fn, variables, emb_x, features=True)
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
        flags = [r.get("flag") for r in runs if r.get("flag")]
        flag = None
        if flags:
            flag = f"{flags[0]} ({len(flags)}/{len(runs)} seeds)"
        out.append({"method": first["method"], **ev.aggregate(numeric), "flag": flag})
    return out


COLUMNS = {
    "acc_*": "accuracies; acc_test covers retained classes in class mode",
    "mia_accuracy": "DLFD loss attack (LR on losses), forget vs unseen; 0.5 = ideal",
    "nomus": "(acc_test + 1 - 2|mia_accuracy - 0.5|) / 2",
    "utv": "total variation to the retrained model on the forget set",
    "mia_svc": "SalUn/RWFT SVC attack: % of forget predicted non-member",
    "lira_auc": "LiRA (shadow models), forget vs unseen; 0.5 = ideal",
    "time": "seconds of unlearning (training for original / retrain),"
    " excluding compilation",
    "compile_time": "seconds spent compiling",
    "flag": "'diverged' (non-finite logits; only accuracies computed) or"
    " 'collapsed' (retain accuracy within 0.02 of chance)",
}


def compare(
    cfg: CompareConfig,
    workdir: str,
    *,
    cache_dir: str | None,
    progress: bool = True,
    plots: bool = True,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the main job and writes its outputs; returns the results dict.

    ``dataset``: ``cfg.dataset`` already loaded (the command line's pre-flight
    check loads it once), else it is loaded here.
    """
    unknown = [m for m in cfg.methods if m not in methods.names()]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; valid names: {methods.names()}.")
    bad = [m for m in cfg.metrics if m not in ev.metric_names()]
    if bad:
        raise ValueError(f"unknown metrics {bad}; valid: {ev.metric_names()}.")
    if not cfg.seeds:
        raise ValueError("seeds must name at least one seed.")
    run = RunDir(workdir, cfg)
    ds = dataset
    if ds is None:
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize)

    per_seed, manifests = [], []
    for j, seed in enumerate(cfg.seeds):
        rows, manifest = _run_seed(
            cfg, seed, ds, run, cache_dir, progress, plots=plots and j == 0
        )
        per_seed.append(rows)
        manifests.append(manifest)
    manifest = run.write_manifest({"seeds": manifests})
    aggregated = _aggregate_rows(per_seed) if len(cfg.seeds) > 1 else None
    shown = aggregated if aggregated is not None else per_seed[0]
    results = {
        "config": run.config,
        "manifest": manifest,
        "rows": per_seed[0] if len(cfg.seeds) == 1 else None,
        "rows_per_seed": {str(s): r for s, r in zip(cfg.seeds, per_seed, strict=True)},
        "aggregate": aggregated,
        "metric_versions": {m: "1" for m in cfg.metrics},
        "columns": COLUMNS,
    }
    run.write_results(results)
    text = rows_table(shown)
    has_plot = False
    if plots:
        bar_keys = ["acc_retain", "acc_forget", "acc_test", "mia_accuracy"]
        bar_rows = [
            {
                "method": r["method"],
                **{
                    k: (r[k]["mean"] if isinstance(r.get(k), dict) else r.get(k))
                    for k in bar_keys
                },
            }
            for r in shown
        ]
        try:
            fig = ev.plot_metric_bars(
                bar_rows,
                bar_keys,
                title=f"{cfg.dataset} / {cfg.model} / {cfg.mode} forgetting",
            )
            ev.save_figure(fig, run.path("compare.png"))
            has_plot = True
        except ImportError:
            pass
    run.write_report(_report(cfg, manifests, text, run, has_plot))
    results["table"] = text
    return results


def _report(cfg, manifests, text, run, has_plot) -> list[str]:
    sizes = manifests[0]["split"]["sizes"]
    target = (
        f"Forget classes: {list(cfg.forget_classes)}"
        if cfg.mode == "class"
        else f"Forget fraction: {cfg.forget_fraction}"
    )
    lines = [
        f"# jaxunlearn compare: {cfg.dataset} / {cfg.model} / {cfg.mode} forgetting",
        "",
        f"{target}. Set sizes (seed {cfg.seeds[0]}): {sizes}. Seeds"
        f" {list(cfg.seeds)}. Shadow models: {cfg.shadow_models}. Backend"
        f" {jax.default_backend()}.",
        "",
        text,
        "",
        "MIA: DLFD's logistic regression on per-example losses, forget (members) vs"
        " unseen test data (non-members; the forgotten classes in class mode),"
        " balanced sizes, 10 stratified splits; 0.5 means the forget set looks"
        " unseen. NoMUS = (ACC_test + 1 - 2|MIA - 0.5|) / 2. UTV: total variation"
        " to the retrained model's outputs on the forget set (0 = identical)."
        " SVC-MIA%: percent of forget examples an SVC on true-class confidence"
        " (retain-train vs test) calls non-member (retrain is about 100). LiRA"
        " AUC: likelihood-ratio attack with shadow models, forget vs unseen.",
        "Times exclude compilation, which is reported separately. A bold flag"
        " beside a method: **diverged** (non-finite outputs; only accuracies"
        " measured, left out of the figures) or **collapsed** (retain accuracy"
        " at chance).",
    ]
    if len(cfg.seeds) > 1:
        lines.append(
            "Values are mean ± std over seeds; results.json holds 95%"
            " bootstrap confidence intervals."
        )
    if has_plot:
        lines += ["", "![compare](compare.png)"]
        for name in ("loss_hist", "roc_log", "confusion", "embedding"):
            if os.path.exists(run.path(f"{name}.png")):
                lines.append(f"![{name}]({name}.png)")
    return lines


TUNE_TABLE = (
    ("score", "score", ".4f"),
    ("ACC_retain", "retain", ".4f"),
    ("ACC_forget", "forget", ".4f"),
    ("ACC_val", "heldout", ".4f"),
    ("MIA", "privacy", ".4f"),
    ("points", "points", "d"),
    ("time_s", "time", ".2f"),
    ("compile_s", "compile_time", ".2f"),
)


def tune(
    cfg: CompareConfig,
    workdir: str,
    *,
    cache_dir: str | None,
    progress: bool = True,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The job behind ``jaxunlearn tune``: one vmapped sweep per method.

    Trains (or loads) the original and retrained models like :func:`compare`,
    sweeps every method's grid (:func:`tune_grid`) as one program per chunk
    and selects against the retrained model on the val split by the rule in
    ``cfg.tune_select``. Writes ``tune.json`` (rule, grids, every point's
    metrics and score, the winners) and ``report.md``; returns the record,
    whose ``"selected"`` maps method -> winning hyperparameters (of the first
    seed), ready for ``--method-config``.
    """
    if not cfg.seeds:
        raise ValueError("seeds must name at least one seed.")
    ds = dataset
    if ds is None:
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize)
    run = RunDir(workdir, cfg)
    sweeps: dict[str, dict[str, Any]] = {}
    rows = []
    for seed in cfg.seeds:
        split, model, _, (original, _), (retrained, _) = _seed_models(
            cfg, seed, ds, cache_dir, progress
        )
        apply_fn = models.make_apply_fn(model)
        seed_key = jax.random.key(seed + 2)
        target, seed_rows = None, []
        for name in cfg.methods:
            recipe = dict(cfg.recipes.get(name, {}))
            epochs = int(recipe.get("epochs", 1))
            method = _build_method(name, recipe, split, model)
            row = {"method": name, "seed": seed, "best": None, "flag": None}
            try:
                sw = tune_method(
                    name, method, split, original, retrained, apply_fn, cfg,
                    epochs=epochs, key=_method_key(seed_key, name),
                    progress=f"seed {seed}: tune {name}" if progress else False,
                )  # fmt: skip
                if sw is None:
                    names = train.sweepable(method, original)
                    row["flag"] = (
                        f"not tuned: no learning rate; sweepable: {names or 'none'}"
                    )
            except FloatingPointError:
                sw, row["flag"] = None, "every grid point diverged"
            record = None if sw is None else sw.to_json()
            sweeps.setdefault(name, {})[str(seed)] = record
            if sw is not None and target is None:  # the selection target
                target = {"method": "retrain (target)", "seed": seed, "best": None,
                          "flag": None, "score": 0.0, **sw.reference}  # fmt: skip
            if sw is not None:
                if sw.on_edge:  # a caution, not an error
                    row["flag"] = f"winner on the grid's edge: {', '.join(sw.on_edge)}"
                row.update(
                    best=sw.best,
                    score=sw.scores[sw.best_index],
                    **sw.metrics[sw.best_index],
                    points=len(sw.points),
                    time=sw.run_time,
                    compile_time=sw.compile_time,
                )
            seed_rows.append(row)
        rows += ([target] if target is not None else []) + seed_rows
    first = str(cfg.seeds[0])
    selected = {
        name: by_seed[first]["best"]
        for name, by_seed in sweeps.items()
        if by_seed[first] is not None
    }
    record = {
        "config": run.config,
        "rule": train.SelectionRule(weights=dict(cfg.tune_select)).to_json(),
        "selected": selected,
        "rows": rows,
        "sweeps": sweeps,
    }
    cache.atomic_write_json(run.path("tune.json"), record)
    shown = [
        {**r, "method": f"{r['method']} {_fmt_point(r['best'])}".strip()} for r in rows
    ]
    text = table(shown, TUNE_TABLE)
    run.write_report(
        [
            f"# jaxunlearn tune: {cfg.dataset} / {cfg.model} / {cfg.mode} forgetting",
            "",
            f"Selection rule: `{record['rule']['formula']}`, measured on the val"
            " split (retain accuracy on at most 2,000 retain examples; MIA:"
            " cross-fitted logistic regression on losses, forget vs val). The"
            " test split is not used. Each method's grid ran as one vmapped"
            f" program per chunk. Seeds {list(cfg.seeds)}.",
            "",
            text,
            "",
            "Every point's metrics and score are in tune.json; `selected` holds"
            " the winners, usable as `--method-config`.",
        ]
    )
    record["table"] = text
    return record


def _fmt_point(point: dict[str, float] | None) -> str:
    """``(name=value, ...)`` of a tuned setting; ``""`` for none."""
    if not point:
        return ""
    return "(" + ", ".join(f"{k}={v:g}" for k, v in point.items()) + ")"
