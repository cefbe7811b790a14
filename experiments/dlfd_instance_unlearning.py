"""DLFD instance unlearning: the paper's Tables 1-3 and Figs. 2 / 5 / 6 on
Fashion-MNIST (digits for the smoke config), every method on one harness.

Usage::

    python experiments/dlfd_instance_unlearning.py --workdir runs/dlfd
    python experiments/dlfd_instance_unlearning.py --config smoke --workdir /tmp/d

Task-agnostic instance unlearning (the task stays, some training examples
must be forgotten), in two modes: ``group`` forgets whole pseudo-identities
(k-means clusters inside each class, ``data.group_split``) and tests on groups
never seen in training, as the paper's identity tasks do; ``random`` forgets a
uniform random 10% of the training examples. Per (mode, seed): the original
model (trained on retain + forget) and the retrained oracle (retain only) are
cached; every method starts from the original and is evaluated by test
accuracy, top-2 accuracy, the loss-based membership attack of the paper
(``eval.mia_logreg`` on forget vs unseen per-example losses, size-balanced),
the forgetting score ``FS = 2 |acc - 0.5|`` (``eval.forgetting_score``; the
paper's tables print ``FS / 2``) and ``NoMUS = (acc + 1 - FS) / 2``.

Rows: ``original`` (no unlearning), ``retrain``, ``finetune``, ``neggrad``,
``cf_k``, ``eu_k``, ``unsir``, ``bad_teacher``, ``scrub``, ``dlfd`` (the
paper's text), the Table 3 ablation ``dlfd_fdo`` (feature-distribution
optimisation only) and ``dlfd_cls`` (+ classification loss, no dynamic
forgetting; ``dlfd`` adds it), and ``dlfd_code`` (the authors' released code:
``methods.DLFD_REFERENCE_CODE``). The NegGrad leak (Fig. 6) reruns NegGrad on
a small forget subset. One (mode, seed, row) is one harness row: its key
hashes every config field but the looped lists, so adding a seed or a method
recomputes nothing finished.

Configs: ``cpu`` (default; Fashion-MNIST subsample, BatchNorm CNN, 3 seeds,
both modes; sized for 2 cores), ``full`` (CIFAR-10 via TFDS, ResNet-18, the
paper's recipe; for accelerators) and ``smoke`` (digits, seconds).
"""

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from jaxunlearn import data, harness, methods, models, train
from jaxunlearn import eval as ev
from jaxunlearn.harness import Claim, UsageError, fmt

ROW_FORMAT = 1  # bump when a row's computation changes
# Config fields a row's key leaves out: the looped lists, and what reaches a
# row through its recipe (which is in the key).
EXCLUDE = ("seeds", "data_dir", "rows", "recipes", "dlfd", "modes", "monitor_size")

# Paper Table 1 (ResNet-18, age task; FS un-doubled as printed) and Table 2 /
# Table 3 NoMUS (age column).
PAPER = {
    "table1_age": {
        "original": {"acc": 0.6329, "fs": 0.1923, "nomus": 0.6241},
        "retrain": {"acc": 0.6050, "fs": 0.0767, "nomus": 0.7258},
        "finetune": {"acc": 0.6349, "fs": 0.1980, "nomus": 0.6195},
        "unsir": {"acc": 0.5950, "fs": 0.0887, "nomus": 0.7088},
        "bad_teacher": {"acc": 0.3663, "fs": 0.0455, "nomus": 0.6376},
        "scrub": {"acc": 0.6311, "fs": 0.1614, "nomus": 0.6541},
        "dlfd": {"acc": 0.6166, "fs": 0.0385, "nomus": 0.7698},
    },
    "table2_age_nomus": {"neggrad": 0.6946, "cf_k": 0.6262, "eu_k": 0.6309},
    "table3_age_nomus": {"dlfd_fdo": 0.7021, "dlfd_cls": 0.7536, "dlfd": 0.7698},
    "fig6": "forget losses of error maximisation exceed unseen losses when the"
    " forget set is small (< 100 examples)",
}
BASELINES = ("finetune", "neggrad", "cf_k", "eu_k", "unsir", "bad_teacher", "scrub")
ABLATION = ("dlfd_fdo", "dlfd_cls", "dlfd")
ROWS = ("original", "retrain", *BASELINES, "dlfd", "dlfd_fdo", "dlfd_cls", "dlfd_code")
NOTE = (
    "as in the paper's tables; NoMUS uses the doubled score. Mean ± std over"
    " seeds; paper column: ResNet-18 age task (test acc / FS / NoMUS, Tables"
    " 1-3)."
)
FIGURE_ROWS = ("original", "retrain", "dlfd", "neggrad")


def _recipes(
    dlfd: dict[str, Any], monitor_size: int = 256
) -> dict[str, dict[str, Any]]:
    """Row -> recipe: ``method`` (registry name), ``epochs`` and keywords.

    The DLFD repository's settings (docs/methods_notes.md): SGD momentum 0.9,
    weight decay 5e-4; fine-tune 2 epochs at 1e-3, NegGrad 1 epoch at 1e-3,
    CF-k 2 epochs at 1e-3 (no decay), EU-k 2 epochs at 1e-3, UNSIR Adam 1e-3
    (impair 1 + repair 2 epochs), SCRUB 2 epochs at 5e-4, DLFD one epoch.
    The rows with dynamic forgetting monitor up to ``monitor_size`` examples
    per side (the reference code monitors its whole validation split).
    """
    monitor = {"monitor_size": monitor_size}
    return {
        "finetune": {"method": "finetune", "epochs": 2, "learning_rate": 1e-3},
        "neggrad": {"method": "neggrad", "epochs": 1, "learning_rate": 1e-3},
        "cf_k": {"method": "cf_k", "epochs": 2, "learning_rate": 1e-3},
        # EU-k re-initialises the last stage: at the DLFD repository's 1e-3
        # (which re-initialises nothing) a fresh head does not recover in two
        # epochs, so it trains at the original model's rate scale.
        "eu_k": {"method": "eu_k", "epochs": 2, "learning_rate": 1e-2},
        "unsir": {"method": "unsir", "epochs": 3},
        "bad_teacher": {"method": "bad_teacher", "epochs": 1},
        "scrub": {"method": "scrub", "epochs": 2},
        "dlfd": {"method": "dlfd", "epochs": 1, **dlfd, **monitor},
        "dlfd_fdo": {
            "method": "dlfd",
            "epochs": 1,
            **dlfd,
            "classification": False,
            "dynamic": False,
        },
        "dlfd_cls": {"method": "dlfd", "epochs": 1, **dlfd, "dynamic": False},
        "dlfd_code": {
            "method": "dlfd",
            "epochs": 1,
            **dlfd,
            **monitor,
            **methods.DLFD_REFERENCE_CODE,
        },
    }


@dataclasses.dataclass
class Config:
    """Everything that determines a run (``get_config`` presets)."""

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_subsample: int | None = 5000
    test_subsample: int | None = 2000
    modes: tuple[str, ...] = ("group", "random")
    forget_fraction: float = 0.1
    groups_per_class: int = 10
    model: str = "cnn"
    model_kwargs: dict = dataclasses.field(
        default_factory=lambda: {"widths": (8, 16, 32)}
    )
    training: train.TrainConfig = dataclasses.field(
        default_factory=lambda: train.TrainConfig(
            epochs=12, batch_size=64, learning_rate=0.05
        )
    )
    batch_size: int = 32  # unlearning batch (the paper's age setting)
    dlfd: dict = dataclasses.field(
        default_factory=lambda: {
            "learning_rate": 0.008,
            "perturb_steps": 15,
            "step_size": 0.01,
            "ot_weight": 3.0,
            "ce_weight": (0.0, 1.0),
            "track_ot_grad": True,
        }
    )
    monitor_size: int = 1024  # per side; covers the whole validation split
    # DLFD's thresholds on the (doubled) forgetting score, as fractions of the
    # original model's score on forget vs validation losses: the paper's age
    # run uses tau = 0.15 and a save bound of 0.09 against an original FS of
    # 0.1923 (all un-doubled), i.e. 0.78 and 0.47 of it.
    threshold_ratio: float = 0.15 / 0.1923
    save_threshold_ratio: float = 0.09 / 0.1923
    recipes: dict = dataclasses.field(default_factory=dict)  # row -> overrides
    rows: tuple[str, ...] = ROWS
    seeds: tuple[int, ...] = (0, 1, 2)
    leak_forget_size: int = 50
    leak_epochs: int = 10


def get_config(name: str = "cpu") -> Config:
    if name == "cpu":
        return Config()
    if name == "full":
        return Config(
            dataset="cifar10",
            train_subsample=None,
            test_subsample=None,
            model="resnet18",
            model_kwargs={},
            training=train.TrainConfig(epochs=100, batch_size=128, learning_rate=0.01),
            seeds=(0, 1, 2, 3, 4),
        )
    if name == "smoke":
        return Config(
            dataset="digits",
            train_subsample=None,
            test_subsample=None,
            modes=("group",),
            model="mlp",
            model_kwargs={"hidden": (32,)},
            training=train.TrainConfig(epochs=6, batch_size=64, learning_rate=0.05),
            batch_size=32,
            dlfd={
                "learning_rate": 0.008,
                "perturb_steps": 2,
                "step_size": 0.01,
                "sinkhorn_iterations": 5,
                "track_ot_grad": True,
            },
            monitor_size=32,
            rows=(
                "original",
                "retrain",
                "finetune",
                "neggrad",
                "dlfd",
                "dlfd_cls",
                "dlfd_code",
            ),
            seeds=(0,),
            leak_forget_size=20,
            leak_epochs=2,
        )
    raise ValueError(f"unknown config {name!r}; valid: cpu, full, smoke.")


def _losses(apply_fn, variables, part):
    logits = train.predict(apply_fn, variables, part["image"])
    return np.asarray(ev.per_example_loss(logits, part["label"])), logits


def _top2(logits, labels):
    top = np.argsort(-logits, axis=-1)[:, :2]
    return float(np.mean((top == labels[:, None]).any(-1)))


def _silhouette(features, labels, seed, n=1000):
    from sklearn.metrics import silhouette_score

    idx = np.random.default_rng(seed).permutation(len(labels))[:n]
    return float(silhouette_score(features[idx], labels[idx]))


class _Setup:
    """The split, model and oracle models of one (mode, seed), built lazily."""

    def __init__(self, cfg: Config, mode: str, seed: int, workdir: str, log):
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir)
        ds = {
            **ds,
            "train": data.subsample(ds["train"], cfg.train_subsample, seed),
            "test": data.subsample(ds["test"], cfg.test_subsample, seed + 1),
        }
        kw = {"forget_fraction": cfg.forget_fraction}
        if mode == "group":
            kw["groups_per_class"] = cfg.groups_per_class
        self.split = data.split(ds, mode, seed=seed, **kw)
        self.num_classes = self.split.num_classes
        self.model = models.get_model(cfg.model, self.num_classes, **cfg.model_kwargs)
        self.apply_fn = models.make_apply_fn(self.model)
        self.example = self.split.retain["image"][:1]
        cache_dir = os.path.join(workdir, "cache")
        t = time.perf_counter()
        self.original, info_o = train.train_original(
            self.model, self.split, cfg.training, seed=seed, cache_dir=cache_dir
        )
        self.retrained, info_r = train.retrain(
            self.model, self.split, cfg.training, seed=seed, cache_dir=cache_dir
        )
        log(
            f"[dlfd] {mode} seed {seed}: original {info_o['cache']}, retrain"
            f" {info_r['cache']} ({time.perf_counter() - t:.0f}s);"
            f" sizes {self.split.summary()['sizes']}"
        )
        self._monitor_scores: dict[int, float] = {}
        self.oracle_time = {
            "original": info_o.get("run_time", 0.0),
            "retrain": info_r.get("run_time", 0.0),
        }

    def monitor_score(self, seed: int) -> float:
        """The original model's forgetting score on forget vs validation
        losses (what DLFD's monitor sees; never the test set). Computed once
        per setup, shared by the DLFD rows."""
        if seed not in self._monitor_scores:
            lf, _ = _losses(self.apply_fn, self.original, self.split.forget)
            lv, _ = _losses(self.apply_fn, self.original, self.split.val)
            acc = ev.mia_logreg(lf, lv, seed=seed)["accuracy"]
            self._monitor_scores[seed] = ev.forgetting_score(acc)
        return self._monitor_scores[seed]

    def evaluate(self, variables, *, seed: int, figure: bool = False):
        s = self.split
        lf, logits_f = _losses(self.apply_fn, variables, s.forget)
        lu, logits_u = _losses(self.apply_fn, variables, s.test)
        logits_r = train.predict(self.apply_fn, variables, s.retain["image"])
        finite = bool(np.all(np.isfinite(lf)) and np.all(np.isfinite(lu)))
        out = {
            "acc_test": ev.accuracy(logits_u, s.test["label"]),
            "top2_test": _top2(logits_u, s.test["label"]),
            "acc_forget": ev.accuracy(logits_f, s.forget["label"]),
            "acc_retain": ev.accuracy(logits_r, s.retain["label"]),
            "loss_forget": float(np.mean(lf)),
            "loss_unseen": float(np.mean(lu)),
        }
        if not finite:
            return {**out, "diverged": True}
        mia = ev.mia_logreg(lf, lu, seed=seed)
        fs = ev.forgetting_score(mia["accuracy"])
        out.update(
            mia_accuracy=mia["accuracy"],
            mia_auc=mia["auc"],
            forgetting_score=fs,
            fs_table=fs / 2,
            nomus=ev.nomus(out["acc_test"], fs),
        )
        feats = train.predict(self.apply_fn, variables, s.test["image"], features=True)
        out["silhouette"] = _silhouette(feats, s.test["label"], seed)
        if figure:
            from sklearn.decomposition import PCA

            idx = np.random.default_rng(seed).permutation(len(feats))[:600]
            xy = PCA(2, random_state=0).fit_transform(feats[idx])
            out["figure"] = {
                "forget_losses": np.round(lf, 5).tolist(),
                "unseen_losses": np.round(lu, 5).tolist(),
                "pca": np.round(xy, 4).tolist(),
                "pca_labels": s.test["label"][idx].tolist(),
            }
        return out


def _run_method(cfg, setup: _Setup, row: str, seed: int, log_metrics):
    recipe = dict(_recipes(cfg.dlfd, cfg.monitor_size)[row])
    recipe.update(cfg.recipes.get(row, {}))
    name = recipe.pop("method")
    epochs = int(recipe.pop("epochs"))
    s = setup.split
    if name == "dlfd":
        fs = setup.monitor_score(seed)
        recipe.setdefault("threshold", min(1.0, cfg.threshold_ratio * fs))
        recipe.setdefault("save_threshold", min(1.0, cfg.save_threshold_ratio * fs))
    method = methods.get(
        name,
        apply_fn=setup.apply_fn,
        num_classes=setup.num_classes,
        init_fn=lambda k: models.init(setup.model, k, setup.example),
        example_input=setup.example,
        forget_set=s.forget,
        retain_set=s.retain,
        val_set=s.val,
        **recipe,
    )
    res = train.unlearn(
        method,
        setup.original,
        s,
        epochs=epochs,
        batch_size=cfg.batch_size,
        key=jax.random.key(seed * 1000 + 17),
        callback=lambda e, m, st: log_metrics({"epoch": e, **m}),
    )
    variables = res.variables
    if name == "dlfd" and recipe.get("select_checkpoint"):
        variables = methods.dlfd_selected(res.state)
    history = res.history
    out = {
        "time": res.run_time,
        "compile_time": res.compile_time,
        "epochs": epochs,
    }
    if name == "dlfd":
        out["threshold"] = recipe["threshold"]
    for k in ("perturbed", "monitor_ran", "ot_grad_norm", "sinkhorn_converged"):
        vals = [h[k] for h in history if k in h]
        if vals:
            out[k] = float(np.mean(vals))
    return variables, out


def _leak(cfg, setup: _Setup, seed: int):
    """NegGrad on a small forget subset (paper Fig. 6)."""
    s = setup.split
    n = min(cfg.leak_forget_size, len(s.forget["label"]))
    keep = np.zeros(len(s.forget["label"]), bool)
    keep[np.random.default_rng(seed).permutation(len(keep))[:n]] = True
    small = {k: v[keep] for k, v in s.forget.items()}
    recipe = dict(_recipes(cfg.dlfd, cfg.monitor_size)["neggrad"])
    recipe.update(cfg.recipes.get("neggrad", {}))
    recipe.pop("method"), recipe.pop("epochs")
    method = methods.get("neggrad", apply_fn=setup.apply_fn, **recipe)
    res = train.unlearn(
        method,
        setup.original,
        {"retain": s.retain, "forget": small},
        epochs=cfg.leak_epochs,
        batch_size=cfg.batch_size,
        key=jax.random.key(seed * 1000 + 29),
    )
    out = {}
    for tag, v in (("original", setup.original), ("neggrad", res.variables)):
        lf, _ = _losses(setup.apply_fn, v, small)
        lu, _ = _losses(setup.apply_fn, v, s.test)
        ok = bool(np.all(np.isfinite(lf)) and np.all(np.isfinite(lu)))
        out[tag] = {
            "forget_loss_mean": float(np.mean(lf)),
            "unseen_loss_mean": float(np.mean(lu)),
            "forget_above_unseen_median": float(np.mean(lf > np.median(lu))),
            "mia_auc": ev.mia_logreg(lf, lu, seed=seed)["auc"] if ok else None,
        }
    out["forget_size"] = int(n)
    return out


def _rows_of(cfg, rd, workdir, log, report_only=False):
    rows, leaks, figures = [], {}, {}
    recipes = _recipes(cfg.dlfd, cfg.monitor_size)

    def checked(name, fields, compute):
        if report_only and rd.load_row(name, rd.row_key(fields)) is None:
            raise UsageError(
                f"row {name} of {workdir} is missing or stale: --report-only"
                " only re-renders a finished run; run the experiment first."
            )
        return rd.row(name, fields, compute)

    for mode in cfg.modes:
        for seed in cfg.seeds:
            setup = None

            def get_setup(mode=mode, seed=seed):
                nonlocal setup
                if setup is None:
                    setup = _Setup(cfg, mode, seed, workdir, log)
                return setup

            for row in cfg.rows:
                fig = seed == cfg.seeds[0] and row in FIGURE_ROWS
                recipe = (
                    None
                    if row in ("original", "retrain")
                    else {**recipes[row], **cfg.recipes.get(row, {})}
                )
                fields = rd.fields(
                    exclude=EXCLUDE,
                    mode=mode,
                    seed=seed,
                    row=row,
                    recipe=recipe,
                    figure=fig,
                    engine=train.ENGINE_VERSION,
                    row_format=ROW_FORMAT,
                )
                name = f"{mode}_seed{seed}_{row}"

                def compute(row=row, fig=fig, seed=seed, name=name, mode=mode):
                    st = get_setup()
                    t = time.perf_counter()
                    if row == "original":
                        v, extra = st.original, {"time": st.oracle_time["original"]}
                    elif row == "retrain":
                        v, extra = st.retrained, {"time": st.oracle_time["retrain"]}
                    else:
                        v, extra = _run_method(
                            cfg,
                            st,
                            row,
                            seed,
                            lambda m: rd.log_metrics(name, m),
                        )
                    out = {**extra, **st.evaluate(v, seed=seed, figure=fig)}
                    out["wall_s"] = time.perf_counter() - t
                    log(
                        f"[dlfd] {mode} seed {seed} {row}: test"
                        f" {fmt(out['acc_test'])} FS {fmt(out.get('forgetting_score'))}"
                        f" NoMUS {fmt(out.get('nomus'))} ({out['wall_s']:.1f}s)"
                    )
                    return out

                res = dict(checked(name, fields, compute))
                if "figure" in res:
                    figures[(mode, row)] = res.pop("figure")
                res["flag"] = harness.row_flag(
                    res,
                    keys=("acc_test", "loss_forget", "loss_unseen"),
                    accuracy_key="acc_test",
                    chance=1.0 / 10,
                )
                rows.append({"mode": mode, "seed": seed, "method": row, **res})
            if "neggrad" in cfg.rows:
                fields = rd.fields(
                    exclude=EXCLUDE,
                    mode=mode,
                    seed=seed,
                    row="leak",
                    recipe=cfg.recipes.get("neggrad"),
                    engine=train.ENGINE_VERSION,
                    row_format=ROW_FORMAT,
                )
                leaks[(mode, seed)] = checked(
                    f"{mode}_seed{seed}_leak",
                    fields,
                    lambda seed=seed: _leak(cfg, get_setup(), seed),
                )
    return rows, leaks, figures


METRICS = (
    "acc_test",
    "top2_test",
    "acc_forget",
    "acc_retain",
    "forgetting_score",
    "fs_table",
    "nomus",
    "mia_auc",
    "silhouette",
    "time",
    "perturbed",
    "ot_grad_norm",
)


def _aggregate(rows):
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        out.setdefault((r["mode"], r["method"]), []).append(r)
    agg = {}
    for key, rs in out.items():
        cell = {"n": len(rs), "flag": next((r["flag"] for r in rs if r["flag"]), None)}
        for m in METRICS:
            vals = [r[m] for r in rs if r.get(m) is not None and np.isfinite(r[m])]
            if vals:
                cell[m] = {
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                    "n": len(vals),
                    "values": vals,
                }
        agg[key] = cell
    return agg


def _mean(agg, mode, row, m):
    c = agg.get((mode, row), {}).get(m)
    return None if c is None else c["mean"]


def _paired(rows, mode, a, b, m):
    """Per-seed differences ``a - b`` of metric ``m``."""
    va = {r["seed"]: r.get(m) for r in rows if r["mode"] == mode and r["method"] == a}
    vb = {r["seed"]: r.get(m) for r in rows if r["mode"] == mode and r["method"] == b}
    return [
        va[s] - vb[s] for s in va if s in vb and va[s] is not None and vb[s] is not None
    ]


def _pair(rows, mode, a, b, m):
    return _spread(_paired(rows, mode, a, b, m))


def _spread(xs, spec=".4f"):
    if not xs:
        return "no pairs"
    x = np.asarray(xs, float)
    return (
        f"min {fmt(x.min(), spec)} / median {fmt(np.median(x), spec)} /"
        f" max {fmt(x.max(), spec)} (n={x.size})"
    )


def _claims(cfg, rows, agg, leaks) -> list[Claim]:
    out = []
    for mode in cfg.modes:
        dl = _mean(agg, mode, "dlfd", "nomus")
        base = {
            b: _mean(agg, mode, b, "nomus")
            for b in BASELINES
            if _mean(agg, mode, b, "nomus") is not None
        }
        if dl is not None and base:
            best = max(base, key=base.get)
            beaten = [b for b, v in base.items() if dl >= v]
            out.append(
                Claim(
                    f"{mode}_dlfd_nomus_above_baselines",
                    f"[{mode}] DLFD's NoMUS is at or above every baseline's"
                    " except retrain (mean over seeds)",
                    paper="DLFD .7698 vs best baseline (UNSIR) .7088 (age)",
                    ours=f"{fmt(dl)} vs best baseline {best} {fmt(base[best])}",
                    threshold="DLFD >= every baseline",
                    holds=len(beaten) == len(base),
                    evidence=[
                        f"DLFD at or above {len(beaten)} of {len(base)} baselines;"
                        " below: "
                        + (", ".join(b for b in base if b not in beaten) or "none"),
                        f"per-seed DLFD - {best}:"
                        f" {_spread(_paired(rows, mode, 'dlfd', best, 'nomus'))}",
                    ],
                )
            )
        ab = [_mean(agg, mode, r, "nomus") for r in ABLATION]
        if all(v is not None for v in ab):
            steps = [ab[1] - ab[0], ab[2] - ab[1]]
            out.append(
                Claim(
                    f"{mode}_ablation_each_component_adds",
                    f"[{mode}] Table 3: each DLFD component adds NoMUS (FDO only <"
                    " + classification loss < + dynamic forgetting)",
                    paper=".7021 < .7536 < .7698 (age)",
                    ours=" < ".join(fmt(v) for v in ab),
                    threshold="both steps > 0",
                    holds=all(s > 0 for s in steps),
                    evidence=[
                        f"+classification: {fmt(steps[0], '+.4f')}, per seed"
                        f" {_pair(rows, mode, 'dlfd_cls', 'dlfd_fdo', 'nomus')}",
                        f"+dynamic: {fmt(steps[1], '+.4f')}, per seed"
                        f" {_pair(rows, mode, 'dlfd', 'dlfd_cls', 'nomus')}",
                        f"perturbed fraction of batches: dlfd"
                        f" {fmt(_mean(agg, mode, 'dlfd', 'perturbed'), '.2f')},"
                        " dlfd_cls"
                        f" {fmt(_mean(agg, mode, 'dlfd_cls', 'perturbed'), '.2f')}",
                    ],
                )
            )
        fs_d = _mean(agg, mode, "dlfd", "forgetting_score")
        fs_o = _mean(agg, mode, "original", "forgetting_score")
        if fs_d is not None and fs_o is not None:
            out.append(
                Claim(
                    f"{mode}_dlfd_lowers_fs",
                    f"[{mode}] DLFD lowers the forgetting score of the original"
                    " model (doubled FS)",
                    paper="2 x .0385 vs 2 x .1923 (age)",
                    ours=f"{fmt(fs_d)} vs {fmt(fs_o)}",
                    threshold="DLFD < original",
                    holds=fs_d < fs_o,
                    evidence=[
                        "per-seed DLFD - original:"
                        f" {_pair(rows, mode, 'dlfd', 'original', 'forgetting_score')}"
                    ],
                )
            )
        acc_d = _mean(agg, mode, "dlfd", "acc_test")
        acc_o = _mean(agg, mode, "original", "acc_test")
        if acc_d is not None and acc_o is not None:
            out.append(
                Claim(
                    f"{mode}_dlfd_keeps_accuracy",
                    f"[{mode}] DLFD keeps test accuracy within 2 points of the"
                    " original (paper: -1.6 points, age)",
                    paper=".6166 vs .6329",
                    ours=f"{fmt(acc_d)} vs {fmt(acc_o)}",
                    threshold=">= original - 0.02",
                    holds=acc_d >= acc_o - 0.02,
                    evidence=[
                        "per-seed DLFD - original:"
                        f" {_pair(rows, mode, 'dlfd', 'original', 'acc_test')}"
                    ],
                )
            )
        g_paper = _mean(agg, mode, "dlfd_cls", "ot_grad_norm")
        g_code = _mean(agg, mode, "dlfd_code", "ot_grad_norm")
        if g_paper is not None and g_code is not None:
            out.append(
                Claim(
                    f"{mode}_code_variant_ot_gradient_zero",
                    f"[{mode}] the reference code's OT term has exactly zero"
                    " gradient w.r.t. the perturbation; the paper variant's does"
                    " not (mean norm per batch: dlfd_cls perturbs every batch;"
                    " dlfd_code)",
                    paper="(code analysis: OT on clean logits)",
                    ours=f"code {g_code:.3g}, paper {g_paper:.3g}",
                    threshold="code == 0 and paper > 0",
                    holds=g_code == 0.0 and g_paper > 0.0,
                    evidence=["rows *_dlfd_code / *_dlfd_cls: ot_grad_norm"],
                )
            )
        sil = {
            r: _mean(agg, mode, r, "silhouette")
            for r in ("original", "neggrad", "dlfd")
        }
        if all(v is not None for v in sil.values()):
            d_ng = _paired(rows, mode, "neggrad", "original", "silhouette")
            d_dl = _paired(rows, mode, "dlfd", "neggrad", "silhouette")
            d_acc = _paired(rows, mode, "neggrad", "original", "acc_test")
            out.append(
                Claim(
                    f"{mode}_correlation_collapse",
                    f"[{mode}] Fig. 2: error maximisation (NegGrad) blurs the class"
                    " structure of test features (silhouette below the original's)"
                    " and DLFD keeps it better than NegGrad, in every seed",
                    paper="qualitative (t-SNE)",
                    ours=", ".join(f"{k} {fmt(v)}" for k, v in sil.items()),
                    threshold="per seed: neggrad < original and dlfd > neggrad",
                    holds=bool(d_ng and d_dl) and max(d_ng) < 0 and min(d_dl) > 0,
                    evidence=[
                        f"per-seed neggrad - original: {_spread(d_ng)}",
                        f"per-seed dlfd - neggrad: {_spread(d_dl)}",
                        "how far NegGrad moved the model: per-seed test accuracy"
                        f" change {_spread(d_acc)}",
                    ],
                )
            )
        lk = [leaks[k] for k in leaks if k[0] == mode]
        if lk:
            gaps = [
                x["neggrad"]["forget_loss_mean"] - x["neggrad"]["unseen_loss_mean"]
                for x in lk
            ]
            before = [
                x["original"]["forget_loss_mean"] - x["original"]["unseen_loss_mean"]
                for x in lk
            ]
            above = [x["neggrad"]["forget_above_unseen_median"] for x in lk]
            out.append(
                Claim(
                    f"{mode}_neggrad_leak",
                    f"[{mode}] Fig. 6: NegGrad on a small forget set"
                    f" ({lk[0]['forget_size']} examples) pushes the forget losses"
                    " above the unseen losses (mean forget - mean unseen loss)",
                    paper="forget losses exceed unseen losses (< 100 examples)",
                    ours=fmt(float(np.mean(gaps))),
                    threshold="> 0 (before unlearning it is < 0)",
                    holds=float(np.mean(gaps)) > 0,
                    evidence=[
                        f"per seed after: {_spread(gaps)}; before: {_spread(before)}",
                        "fraction of forget examples above the unseen median loss:"
                        f" {_spread(above, '.2f')}",
                    ],
                )
            )
    return out


def _plots(workdir, cfg, figures) -> list[str]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    out = []
    for mode in cfg.modes:
        have = [r for r in ("original", "retrain", "dlfd") if (mode, r) in figures]
        if have:
            fig = Figure(figsize=(4 * len(have), 3.2), layout="constrained")
            axes = np.atleast_1d(fig.subplots(1, len(have)))
            for ax, r in zip(axes, have, strict=True):
                f = figures[(mode, r)]
                ev.plot_loss_histograms(
                    f["forget_losses"], f["unseen_losses"], ax=ax, title=r, log_x=True
                )
            name = f"losses_{mode}.png"
            ev.save_figure(fig, os.path.join(workdir, name))
            out.append(name)
        have = [r for r in ("original", "neggrad", "dlfd") if (mode, r) in figures]
        if have:
            fig = Figure(figsize=(4 * len(have), 3.6), layout="constrained")
            axes = np.atleast_1d(fig.subplots(1, len(have)))
            for ax, r in zip(axes, have, strict=True):
                f = figures[(mode, r)]
                xy = np.asarray(f["pca"])
                ax.scatter(xy[:, 0], xy[:, 1], c=f["pca_labels"], s=4, cmap="tab10")
                ax.set_title(f"{r}: test features (PCA)")
            name = f"embedding_{mode}.png"
            ev.save_figure(fig, os.path.join(workdir, name))
            out.append(name)
    return out


COLUMNS = (
    ("test acc", "acc_test", ".4f"),
    ("top-2", "top2_test", ".4f"),
    ("forget acc", "acc_forget", ".4f"),
    ("FS (table, /2)", "fs_table", ".4f"),
    ("NoMUS", "nomus", ".4f"),
    ("MIA AUC", "mia_auc", ".3f"),
    ("silhouette", "silhouette", ".3f"),
    ("perturbed", "perturbed", ".2f"),
    ("time s", "time", ".1f"),
)


def _paper_cell(row):
    t1 = PAPER["table1_age"].get(row)
    if t1:
        return f"{t1['acc']:.4f} / {t1['fs']:.4f} / {t1['nomus']:.4f}"
    for k in ("table2_age_nomus", "table3_age_nomus"):
        if row in PAPER[k]:
            return f"NoMUS {PAPER[k][row]:.4f}"
    return None


def _report(cfg, agg, claims, leaks, plots, wall, row_wall) -> list[str]:
    lines = [
        f"# DLFD instance unlearning: {cfg.dataset}",
        "",
        f"Seeds {list(cfg.seeds)}; train / test subsample {cfg.train_subsample} /"
        f" {cfg.test_subsample}; {cfg.model} {cfg.model_kwargs}; original and"
        f" retrained models {cfg.training.epochs} epochs at lr"
        f" {cfg.training.learning_rate}; unlearning batch {cfg.batch_size}; DLFD"
        f" {cfg.dlfd}. Wall time of this invocation {wall:.0f} s; the rows'"
        f" own wall times (recorded when each ran, evaluation included) sum to"
        f" {row_wall:.0f} s ({jax.default_backend()}). FS is printed un-doubled"
        f" {NOTE}",
        "",
    ]
    for mode in cfg.modes:
        rows = []
        for r in cfg.rows:
            cell = agg.get((mode, r))
            if cell is None:
                continue
            rows.append(
                {"method": r, **cell, "paper": _paper_cell(r), "flag": cell["flag"]}
            )
        lines += [
            f"## {mode} forgetting",
            "",
            harness.table(rows, [*COLUMNS, ("paper (age)", "paper")]),
            "",
        ]
        lk = [leaks[k] for k in leaks if k[0] == mode]
        if lk:
            lines += [
                f"NegGrad leak (Fig. 6), {lk[0]['forget_size']} forget examples,"
                f" {cfg.leak_epochs} epochs: mean forget / unseen loss before"
                f" {fmt(np.mean([x['original']['forget_loss_mean'] for x in lk]))} /"
                f" {fmt(np.mean([x['original']['unseen_loss_mean'] for x in lk]))},"
                f" after {fmt(np.mean([x['neggrad']['forget_loss_mean'] for x in lk]))}"
                f" / {fmt(np.mean([x['neggrad']['unseen_loss_mean'] for x in lk]))}.",
                "",
            ]
    lines += ["## Claims", "", harness.render_claims(claims, details=True), ""]
    lines += [f"![{p}]({p})" for p in plots]
    return lines


def run(
    cfg: Config, workdir: str, *, log=print, report_only: bool = False
) -> dict[str, Any]:
    """Runs (or resumes) every (mode, seed, row) of ``cfg``; writes the report.

    With ``report_only`` every row must already be finished (nothing trains).
    """
    t0 = time.perf_counter()
    bad_rows = [r for r in cfg.rows if r not in ROWS]
    bad_modes = [m for m in cfg.modes if m not in ("group", "random")]
    if bad_rows or bad_modes or not cfg.seeds:
        raise UsageError(
            f"unknown rows {bad_rows} (valid: {list(ROWS)})"
            if bad_rows
            else f"unknown modes {bad_modes} (valid: group, random)"
            if bad_modes
            else "need at least one seed."
        )
    rd = harness.RunDir(workdir, cfg)
    rows, leaks, figures = _rows_of(cfg, rd, workdir, log, report_only)
    wall = time.perf_counter() - t0
    agg = _aggregate(rows)
    claims = _claims(cfg, rows, agg, leaks)
    plots = _plots(workdir, cfg, figures)
    row_wall = float(sum(r.get("wall_s", 0.0) for r in rows))
    rd.write_report(_report(cfg, agg, claims, leaks, plots, wall, row_wall))
    return harness.finish(
        rd,
        claims,
        wall_time_s=wall,
        rows_wall_time_s=row_wall,
        paper=PAPER,
        rows=rows,
        aggregate=[{"mode": k[0], "method": k[1], **v} for k, v in sorted(agg.items())],
        leak=[{"mode": k[0], "seed": k[1], **v} for k, v in leaks.items()],
    )


def rebuild_report(workdir: str) -> dict[str, Any]:
    """Re-renders report.md / results.json from the finished rows (no training)."""
    return run(harness.load_config(workdir, Config), workdir, report_only=True)


def main(argv=None):
    return harness.driver_main(
        argv,
        description=__doc__.split("\n")[0],
        get_config=get_config,
        run=run,
        presets=("cpu", "full", "smoke"),
        workdir="runs/dlfd_instance_unlearning",
        int_overrides={"seeds": "seeds"},
        rebuild=rebuild_report,
    )


if __name__ == "__main__":
    main()
