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
ACC_f (Table 2; ACC_r also as the drop against the original and against the
retrained model), the SVC "MIA" (Table 2), MIA-NN with the neighbour taken
from the retrained model's confusion matrix (Table 1), UTV (Table 4),
unlearning time next to retraining time; RWFT proportional vs max (Table 8);
forgetting several classes (Table 9); U-LiRA with shadow ensembles (Table 3)
for the first forget class; a BatchNorm ablation (``bn="eval"``) of RWFT on the
two classes where RWFT-2-O loses most ACC_r; a confusion-matrix figure; and
every claim of the paper these touch, checked as a record with measured
evidence.

Run handling is the harness's (:class:`jaxunlearn.harness.RunDir`): each
(seed, class, method) is a row whose key hashes what affects it (data and
model settings, the method's recipe, batch size, seed, class, split hash),
never the lists looped over, so adding a seed or a class recomputes nothing
finished and ``--report-only`` re-renders the report from ``results.json``.
"""

import dataclasses
import functools
import json
import os
import time
import zlib
from typing import Any

import jax
import numpy as np

from jaxunlearn import data, harness, methods, models, train
from jaxunlearn import eval as ev
from jaxunlearn.harness import Claim, fmt

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
MULTI_METRICS = ("accuracy", "mia_svc")
RWFT = ("rwft_o", "rwft_2_o", "rw_a")  # the paper's Table 2 variants
UTV_BASELINES = ("finetune", "random_label", "neggrad")  # FT, RL, GA
MIA_NN_BASELINES = ("finetune", "salun")
# Config fields every row depends on; the others are lists looped over or
# settings of one part, passed to the rows that use them.
SHARED_FIELDS = ("dataset", "train_subsample", "test_subsample", "model")
SHARED_FIELDS += ("model_kwargs", "training")
ROW_FORMAT = 1  # bump when a row's computation changes
COLLAPSE_TOLERANCE = 0.02


@dataclasses.dataclass
class Config:
    """Everything that determines a run (``get_config`` presets)."""

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
    # BatchNorm ablation: these methods rerun with bn="eval" on the forget
    # classes where rwft_2_o's ACC_r drops most (this many), every seed.
    bn_ablation_methods: tuple[str, ...] = ("rwft_o", "rwft_2_o")
    bn_ablation_classes: int = 2


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


UsageError = harness.UsageError


def _check(cfg: Config, num_classes: int | None = None) -> None:
    """Raises :class:`UsageError` for names / classes the run cannot use."""
    # (bn_ablation_methods absent from methods are skipped, as in smoke runs
    # that leave RWFT out)
    for field in ("ulira_methods", "multi_class_methods"):
        unknown = [m for m in getattr(cfg, field) if m not in cfg.methods]
        if unknown:
            raise UsageError(
                f"{field} names {unknown}, not in methods {list(cfg.methods)}."
            )
    if not cfg.seeds or not cfg.forget_classes:
        raise UsageError("need at least one seed and one forget class.")
    if num_classes is not None:
        classes = [*cfg.forget_classes, *(c for m in cfg.multi_class for c in m)]
        bad = sorted({c for c in classes if not 0 <= c < num_classes})
        if bad:
            raise UsageError(
                f"forget classes {bad} out of range: {cfg.dataset} has classes"
                f" 0..{num_classes - 1}."
            )


def _key(seed: int, classes, name: str):
    """The unlearning key of one method: independent of the lists looped over."""
    base = jax.random.key(seed * 1000 + sum(classes) + 100 * (len(classes) - 1))
    return jax.random.fold_in(base, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _flag(values: dict[str, Any], num_classes: int) -> str | None:
    return harness.row_flag(
        values,
        keys=[k for k in ("acc_test", "acc_test_forget", "utv") if k in values],
        accuracy_key="acc_test",
        chance=1.0 / num_classes,
        tolerance=COLLAPSE_TOLERANCE,
    )


class _Case:
    """One (seed, forget classes) case: the split now, the models on first use."""

    def __init__(self, cfg: Config, ds, seed: int, classes, cache_dir: str):
        self.cfg, self.seed, self.classes = cfg, seed, tuple(classes)
        fc = self.classes[0] if len(self.classes) == 1 else list(self.classes)
        self.split = data.split(ds, "class", forget_classes=fc, seed=seed)
        self.num_classes = ds["num_classes"]
        self.model = models.get_model(cfg.model, self.num_classes, **cfg.model_kwargs)
        self.apply_fn = models.make_apply_fn(self.model)
        self.split_hash = self.split.summary()["hashes"]["split"]
        self.cache_dir = cache_dir
        self._models = None

    @property
    def tag(self) -> str:
        return f"s{self.seed}_c{'-'.join(str(c) for c in self.classes)}"

    def models(self):
        """``(original, info_o, retrained, info_r)`` from the model cache."""
        if self._models is None:
            common = dict(cache_dir=self.cache_dir)
            o, io = train.train_original(
                self.model, self.split, self.cfg.training, seed=self.seed, **common
            )
            r, ir = train.retrain(
                self.model, self.split, self.cfg.training, seed=self.seed + 1, **common
            )
            self._models = (o, io, r, ir)
        return self._models

    def release(self) -> None:
        self._models = None

    def logits_fn(self, variables):
        return functools.partial(train.predict, self.apply_fn, variables)

    def evaluate(self, variables, metrics) -> dict[str, Any]:
        """Metrics of ``variables`` and its test confusion matrix; a model with
        non-finite outputs gets accuracies only and ``diverged``, never a crash."""
        retrained = self.models()[2]
        test = self.split.test
        logits = np.asarray(self.logits_fn(variables)(test["image"]))
        out: dict[str, Any] = {}
        try:
            rep = ev.evaluate(
                self.logits_fn(variables),
                self.split,
                metrics=metrics,
                retrained_logits_fn=self.logits_fn(retrained),
                seed=self.seed,
            )
            out.update(rep.values)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
            rep = ev.evaluate(
                self.logits_fn(variables), self.split, metrics=("accuracy",)
            )
            out.update(rep.values, eval_error=f"{type(e).__name__}: {e}")
        if not np.isfinite(logits).all():
            out["diverged"] = True
        cm = ev.confusion_matrix(np.nan_to_num(logits), test["label"], self.num_classes)
        out["confusion"] = np.asarray(cm).astype(int).tolist()
        return out

    def build(self, spec):
        """``(method, epochs)`` of a ``(registry name, kwargs)`` spec."""
        registry_name, kw = spec
        kw = dict(kw)
        epochs = int(kw.pop("epochs"))
        method = methods.get(
            registry_name,
            apply_fn=self.apply_fn,
            num_classes=self.num_classes,
            forget_classes=self.split.forget_classes,
            example_input=self.split.retain["image"][:1],
            forget_set=self.split.forget,
            retain_set=self.split.retain,
            **kw,
        )
        return method, epochs


def _fields(rd: harness.RunDir, case: _Case, **extra) -> dict[str, Any]:
    """A row's key fields: the shared settings, the case and ``extra``."""
    return rd.fields(
        exclude=[k for k in rd.config if k not in SHARED_FIELDS],
        seed=case.seed,
        classes=list(case.classes),
        split=case.split_hash,
        engine=train.ENGINE_VERSION,
        row_format=ROW_FORMAT,
        **extra,
    )


def _reference(case: _Case, metrics) -> dict[str, Any]:
    """The original and retrained models' rows, and where the retrained model
    sends the forget class's test images."""
    original, info_o, retrained, info_r = case.models()
    out = {}
    for name, variables, info in (
        ("original", original, info_o),
        ("retrain", retrained, info_r),
    ):
        out[name] = {
            "seed": case.seed,
            "forget_class": case.classes[0],
            "method": name,
            **case.evaluate(variables, metrics),
            "time": float(info.get("run_time", 0.0)),
            "compile_time": float(info.get("compile_time", 0.0)),
            "model_hash": info["hash"],
        }
        out[name]["flag"] = _flag(out[name], case.num_classes)
    if len(case.classes) == 1:
        fc = case.classes[0]
        row = np.asarray(out["retrain"]["confusion"])[fc]
        nb = int(ev.nearest_class(row, fc))
        out["retrain"]["neighbour_class"] = nb
        out["retrain"]["neighbour_share"] = float(row[nb] / max(row.sum(), 1))
    return out


def _method_row(rd, case, name, spec, metrics, row_name) -> dict[str, Any]:
    cfg = case.cfg
    original = case.models()[0]
    method, epochs = case.build(spec)

    def log(epoch, m, state):
        del state
        rd.log_metrics(row_name, {"method": name, "epoch": epoch, **m})

    t0 = time.perf_counter()
    result = train.unlearn(
        method,
        original,
        case.split,
        epochs=epochs,
        batch_size=cfg.batch_size,
        key=_key(case.seed, case.classes, name),
        callback=log,
    )
    wall = time.perf_counter() - t0
    row = {
        "seed": case.seed,
        "forget_class": case.classes[0],
        "method": name,
        **case.evaluate(jax.device_get(result.variables), metrics),
        # one-shot methods (svd) work in init: time the whole call
        "time": result.run_time if result.history else wall,
        "compile_time": result.compile_time,
        "wall_time": wall,
        "epochs": epochs,
    }
    row["flag"] = _flag(row, case.num_classes)
    return row


def _ulira_row(case, name, spec) -> dict[str, Any]:
    cfg = case.cfg
    original = case.models()[0]
    split = case.split
    labels = split.forget["label"]

    def phi(logits):
        return jax.vmap(ev.logit_confidence, in_axes=(0, None))(logits, labels)

    method, epochs = case.build(spec)
    sh = train.ulira_shadows(
        case.model,
        split,
        method,
        cfg.training,
        num_models=cfg.ulira_models,
        unlearn_epochs=epochs,
        unlearn_batch_size=cfg.batch_size,
        seed=case.seed + 500,
        cache_dir=case.cache_dir,  # shadow retrained models: shared by methods
    )
    target = train.unlearn(
        method,
        original,
        split,
        epochs=epochs,
        batch_size=cfg.batch_size,
        key=_key(case.seed, case.classes, name),
    )
    t_logits = train.predict(case.apply_fn, target.variables, split.forget["image"])
    res = ev.ulira(
        ev.logit_confidence(t_logits, labels),
        phi(sh.unlearned_logits),
        phi(sh.retrained_logits),
    )
    return {
        "seed": case.seed,
        "forget_class": case.classes[0],
        "method": name,
        **{k: float(v) for k, v in res.items() if np.ndim(v) == 0},
    }


def _method_fields(rd, case, name, spec, metrics, **extra):
    return _fields(
        rd,
        case,
        method=name,
        spec=spec,
        batch_size=case.cfg.batch_size,
        metrics=list(metrics),
        **extra,
    )


def _drop(rows, name):
    """Mean ACC_r drop (points) of method ``name`` vs the original, per class."""
    orig = {
        (r["seed"], r["forget_class"]): r for r in rows if r["method"] == "original"
    }
    per: dict[int, list[float]] = {}
    for r in rows:
        if r["method"] == name and r.get("flag") != "diverged":
            o = orig[(r["seed"], r["forget_class"])]
            per.setdefault(r["forget_class"], []).append(
                100 * (o["acc_test"] - r["acc_test"])
            )
    return {c: float(np.mean(v)) for c, v in per.items()}


def run(cfg: Config, workdir: str, *, log=print) -> dict[str, Any]:
    """Runs (or resumes) every row of ``cfg`` in ``workdir``; writes the report."""
    t0 = time.perf_counter()
    _check(cfg)
    rd = harness.RunDir(workdir, cfg)
    cache_dir = os.path.join(workdir, "cache")
    rows: list[dict[str, Any]] = []
    ulira_rows, multi_rows, manifests = [], [], []
    datasets = {}
    for seed in cfg.seeds:
        ds = datasets[seed] = _load(cfg, seed)
        _check(cfg, ds["num_classes"])
        for j, fc in enumerate(cfg.forget_classes):
            case = _Case(cfg, ds, seed, (fc,), cache_dir)
            ref = rd.row(
                f"{case.tag}_reference",
                _fields(rd, case, part="reference", metrics=list(METRICS)),
                lambda case=case: _reference(case, METRICS),
            )
            rows += [ref["original"], ref["retrain"]]
            manifests.append(
                {
                    "seed": seed,
                    "forget_class": fc,
                    "split": case.split_hash,
                    "original": ref["original"]["model_hash"],
                    "retrain": ref["retrain"]["model_hash"],
                }
            )
            for name, spec in cfg.methods.items():
                row_name = f"{case.tag}_{name}"
                row = rd.row(
                    row_name,
                    _method_fields(rd, case, name, spec, METRICS),
                    lambda c=case, n=name, s=spec, rn=row_name: _method_row(
                        rd, c, n, s, METRICS, rn
                    ),
                )
                rows.append(row)
                if row_name in rd.computed:
                    log(
                        f"[rwft] seed {seed} class {fc} {name}: acc_r"
                        f" {fmt(row['acc_test'])} acc_f {fmt(row['acc_test_forget'])}"
                        f" utv {fmt(row.get('utv'))} ({row['time']:.2f}s)"
                        + (f" **{row['flag']}**" if row.get("flag") else "")
                    )
            if j == 0 and seed == cfg.seeds[0] and cfg.ulira_models >= 3:
                for name in cfg.ulira_methods:
                    spec = cfg.methods[name]
                    fields = _method_fields(
                        rd, case, name, spec, (), part="ulira", models=cfg.ulira_models
                    )
                    ulira_rows.append(
                        rd.row(
                            f"ulira_{case.tag}_{name}",
                            fields,
                            lambda c=case, n=name, s=spec: _ulira_row(c, n, s),
                        )
                    )
            case.release()
        for classes in cfg.multi_class:
            case = _Case(cfg, ds, seed, classes, cache_dir)
            ref = rd.row(
                f"multi_{case.tag}_reference",
                _fields(rd, case, part="reference", metrics=list(MULTI_METRICS)),
                lambda case=case: _reference(case, MULTI_METRICS),
            )
            multi_rows.append({**ref["retrain"], "classes": list(classes)})
            for name in cfg.multi_class_methods:
                row_name = f"multi_{case.tag}_{name}"
                spec = cfg.methods[name]
                row = rd.row(
                    row_name,
                    _method_fields(rd, case, name, spec, MULTI_METRICS),
                    lambda c=case, n=name, s=spec, rn=row_name: _method_row(
                        rd, c, n, s, MULTI_METRICS, rn
                    ),
                )
                multi_rows.append({**row, "classes": list(classes)})
            case.release()
    bn = _bn_ablation(cfg, rd, rows, datasets, cache_dir, log)
    parts = {
        "rows": rows,
        "ulira": ulira_rows,
        "multi_class": multi_rows,
        "bn_ablation": bn,
        "manifests": manifests,
    }
    res = _finish(cfg, rd, parts, time.perf_counter() - t0)
    log(f"[rwft] rows computed {len(rd.computed)}, resumed {len(rd.resumed)}")
    return res


def _bn_ablation(cfg, rd, rows, datasets, cache_dir, log) -> dict[str, Any]:
    """RWFT with BatchNorm statistics frozen (``bn="eval"``) on the classes
    where rwft_2_o's ACC_r drops most; paired with the ``bn="train"`` rows."""
    names = [m for m in cfg.bn_ablation_methods if m in cfg.methods]
    if not names or cfg.bn_ablation_classes < 1:
        return {"classes": [], "methods": [], "rows": []}
    rank_by = "rwft_2_o" if "rwft_2_o" in cfg.methods else names[0]
    drops = _drop(rows, rank_by)
    classes = sorted(drops, key=lambda c: -drops[c])[: cfg.bn_ablation_classes]
    out = []
    for seed in cfg.seeds:
        for fc in classes:
            case = _Case(cfg, datasets[seed], seed, (fc,), cache_dir)
            for name in names:
                registry_name, kw = cfg.methods[name]
                spec = (registry_name, {**kw, "bn": "eval"})
                row_name = f"{case.tag}_{name}-bn_eval"

                def compute(c=case, n=name, s=spec, rn=row_name):
                    return _method_row(rd, c, n, s, METRICS, rn)

                row = rd.row(
                    row_name, _method_fields(rd, case, name, spec, METRICS), compute
                )
                out.append({**row, "bn": "eval"})
            case.release()
    if out:
        log(f"[rwft] BatchNorm ablation on classes {classes} (ranked by {rank_by})")
    return {"classes": classes, "ranked_by": rank_by, "methods": names, "rows": out}


# --------------------------------------------------------------------------- #
# Report.
# --------------------------------------------------------------------------- #


def _pairs(rows, a, b, key, scale=1.0):
    """Paired per-(seed, class) differences ``a - b`` of ``key`` (non-diverged)."""
    idx = {
        (r["seed"], r["forget_class"], r["method"]): r
        for r in rows
        if r.get("flag") != "diverged" and r.get(key) is not None
    }
    out = []
    for (s, c, m), r in sorted(idx.items(), key=lambda kv: str(kv[0])):
        if m == a and (s, c, b) in idx:
            out.append(scale * (r[key] - idx[(s, c, b)][key]))
    return out


def _spread(xs, spec=".3f") -> str:
    if not xs:
        return "no pairs"
    x = np.asarray(xs, float)
    return (
        f"min {fmt(x.min(), spec)} / median {fmt(np.median(x), spec)} /"
        f" max {fmt(x.max(), spec)} (n={x.size})"
    )


def _with_drops(rows):
    """Rows with ACC_r drops (points) against the original and the retrained
    model of the same (seed, class)."""
    ref = {
        (r["seed"], r["forget_class"], r["method"]): r
        for r in rows
        if r["method"] in ("original", "retrain")
    }
    out = []
    for r in rows:
        r = dict(r)
        for other, k in (
            ("original", "drop_vs_original"),
            ("retrain", "drop_vs_retrain"),
        ):
            o = ref.get((r["seed"], r["forget_class"], other))
            if o is not None:
                r[k] = 100 * (o["acc_test"] - r["acc_test"])
        out.append(r)
    return out


AGG_KEYS = (
    "acc_test",
    "acc_test_forget",
    "drop_vs_original",
    "drop_vs_retrain",
    "mia_svc",
    "mia_nn",
    "utv",
    "time",
    "acc_retain",
    "acc_forget",
    "neighbour_share",
)


def _aggregate(rows, names):
    out = []
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        if not mine:
            continue
        ok = [r for r in mine if r.get("flag") != "diverged"]
        stats = (
            ev.aggregate(
                [{k: r[k] for k in AGG_KEYS if r.get(k) is not None} for r in ok],
                n_resamples=2000,
            )
            if ok
            else {}
        )
        flagged = [r for r in mine if r.get("flag")]
        flag = None
        if flagged:
            kinds = sorted({r["flag"] for r in flagged})
            flag = f"{len(flagged)}/{len(mine)} {'/'.join(kinds)}"
        out.append({"method": name, **stats, "runs": len(mine), "flag": flag})
    return out


def _mean(agg_by, name, key):
    a = agg_by.get(name, {}).get(key)
    return None if a is None else a["mean"]


def _claims(cfg, rows, ulira_rows) -> list[Claim]:
    agg_by = {a["method"]: a for a in _aggregate(rows, _order(cfg))}
    p2 = PAPER["table2_resnet18_cifar10"]
    out = []
    rw = [n for n in RWFT if n in cfg.methods]

    # ACC_f = 0 for every RWFT variant.
    runs = [r for r in rows if r["method"] in rw]
    if runs:
        nonzero = [r for r in runs if not r["acc_test_forget"] == 0.0]
        worst = max(100 * r["acc_test_forget"] for r in runs)
        out.append(
            Claim(
                "acc_f_zero",
                f"ACC_f = 0 for every RWFT variant ({', '.join(rw)}; %)",
                paper=0.0,
                ours=worst,
                threshold="0 in every run",
                holds=not nonzero,
                evidence=[
                    f"{len(runs) - len(nonzero)}/{len(runs)} runs"
                    f" ({fmt(1 - len(nonzero) / len(runs), '.0%')}) at exactly 0",
                    "nonzero (method, seed, class, ACC_f %): "
                    + (
                        "; ".join(
                            f"({r['method']}, {r['seed']}, {r['forget_class']},"
                            f" {fmt(100 * r['acc_test_forget'], '.2f')})"
                            for r in nonzero
                        )
                        or "none"
                    ),
                ],
            )
        )

    # ACC_r within 1.5 points of the original.
    for name in rw:
        mean = _mean(agg_by, name, "drop_vs_original")
        per_class = _drop(rows, name)
        worst2 = sorted(per_class, key=lambda c: -per_class[c])[:2]
        total = sum(max(v, 0.0) for v in per_class.values())
        share = (
            sum(max(per_class[c], 0.0) for c in worst2) / total if total > 0 else None
        )
        vs_retrain = _pairs(rows, name, "retrain", "acc_test", 100)
        out.append(
            Claim(
                f"acc_r_{name}",
                f"ACC_r of {name} within 1.5 points of the original (drop, points)",
                paper=round(p2["original"][0] - p2[name][0], 2),
                ours=mean,
                threshold="<= 1.5",
                holds=None if mean is None else mean <= 1.5,
                evidence=[
                    "per-class mean drop: "
                    + ", ".join(f"c{c} {per_class[c]:.2f}" for c in sorted(per_class)),
                    f"two worst classes {worst2}: "
                    + (fmt(share, ".0%") if share is not None else "-")
                    + " of the summed positive drop",
                    f"ACC_r({name}) - ACC_r(retrain), paired:"
                    f" {_spread(vs_retrain, '.2f')}",
                ],
            )
        )

    # UTV of RWFT below FT, RL and GA.
    base = [n for n in UTV_BASELINES if n in cfg.methods]
    if rw:
        worst = max((_mean(agg_by, n, "utv") for n in rw), default=None)
        best = min((_mean(agg_by, n, "utv") for n in base), default=None)
        ev_lines = []
        for a in rw:
            for b in base:
                d = _pairs(rows, a, b, "utv")
                frac = np.mean(np.asarray(d) < 0) if d else None
                ev_lines.append(
                    f"UTV {a} - {b}: {_spread(d, '.4f')}; lower in {fmt(frac, '.0%')}"
                )
        pu = PAPER["table4_utv"]
        out.append(
            Claim(
                "utv_below_baselines",
                "UTV of every RWFT variant below FT, RL and GA (max RWFT mean vs"
                " min baseline mean)",
                paper=f"{max(pu[n] for n in rw):.4f} vs"
                f" {min(pu[n] for n in UTV_BASELINES):.4f}",
                ours=f"{fmt(worst)} vs {fmt(best)}" if base else None,
                threshold=f"< min over {base or list(UTV_BASELINES)}",
                holds=None if not base else worst < best,
                evidence=ev_lines or [f"none of {list(UTV_BASELINES)} in methods"],
            )
        )

    # MIA-NN of rwft_2_o below FT and SalUn.
    if "rwft_2_o" in cfg.methods:
        base = [n for n in MIA_NN_BASELINES if n in cfg.methods]
        a = _mean(agg_by, "rwft_2_o", "mia_nn")
        b = min((_mean(agg_by, n, "mia_nn") for n in base), default=None)
        shares = [
            r["neighbour_share"]
            for r in rows
            if r["method"] == "retrain" and r.get("neighbour_share") is not None
        ]
        ev_lines = [
            "share of forget-class test images the retrained model sends to its"
            f" nearest class: {_spread(shares, '.2f')}",
            f"MIA-NN of the retrained model: {fmt(_mean(agg_by, 'retrain', 'mia_nn'))}"
            f" (paper {PAPER['table1_mia_nn']['retrain']})",
        ]
        for n in base:
            d = _pairs(rows, "rwft_2_o", n, "mia_nn")
            frac = np.mean(np.asarray(d) < 0) if d else None
            ev_lines.append(
                f"MIA-NN rwft_2_o - {n}, paired: {_spread(d)};"
                f" rwft_2_o lower in {fmt(frac, '.0%')}"
            )
        pm = PAPER["table1_mia_nn"]
        out.append(
            Claim(
                "mia_nn_rwft_2_o",
                "MIA-NN of rwft_2_o below FT and SalUn (mean vs min of their means)",
                paper=f"{pm['rwft_2_o']} vs {min(pm[n] for n in MIA_NN_BASELINES)}",
                ours=f"{fmt(a, '.3f')} vs {fmt(b, '.3f')}" if base else None,
                threshold=f"< min over {base or list(MIA_NN_BASELINES)}",
                holds=None if not base or a is None else a < b,
                evidence=ev_lines,
            )
        )

    # U-LiRA: rwft_2_o below finetune.
    pu = PAPER["table3_ulira"]
    got = {
        n: [100 * r["target_unlearned_rate"] for r in ulira_rows if r["method"] == n]
        for n in ("rwft_2_o", "finetune")
    }
    both = all(got.values())
    a = float(np.mean(got["rwft_2_o"])) if got["rwft_2_o"] else None
    b = float(np.mean(got["finetune"])) if got["finetune"] else None
    d = [
        100 * (r["target_unlearned_rate"] - f["target_unlearned_rate"])
        for r in ulira_rows
        if r["method"] == "rwft_2_o"
        for f in ulira_rows
        if f["method"] == "finetune"
        and (f["seed"], f["forget_class"]) == (r["seed"], r["forget_class"])
    ]
    out.append(
        Claim(
            "ulira_rwft_2_o_below_ft",
            "U-LiRA accuracy of rwft_2_o below finetune (%)",
            paper=f"{pu['rwft_2_o']} vs {pu['finetune']}",
            ours=f"{fmt(a, '.1f')} vs {fmt(b, '.1f')}" if both else None,
            threshold="rwft_2_o < finetune",
            holds=a < b if both else None,
            evidence=[f"paired rwft_2_o - finetune (points): {_spread(d, '.1f')}"]
            if both
            else [
                f"ulira_methods {list(cfg.ulira_methods)} lacks rwft_2_o or finetune"
            ],
        )
    )

    # Speed: an order of magnitude faster than retraining.
    if rw:
        ratios = {}
        retrain = {
            (r["seed"], r["forget_class"]): r["time"]
            for r in rows
            if r["method"] == "retrain"
        }
        for n in rw:
            ratios[n] = [
                retrain[(r["seed"], r["forget_class"])] / max(r["time"], 1e-9)
                for r in rows
                if r["method"] == n and (r["seed"], r["forget_class"]) in retrain
            ]
        medians = {n: float(np.median(v)) for n, v in ratios.items() if v}
        slowest = min(medians, key=medians.get) if medians else None
        out.append(
            Claim(
                "speed_10x",
                "RWFT an order of magnitude faster than retraining (median paired"
                " ratio retrain time / unlearning time, slowest variant)",
                paper="an order of magnitude",
                ours=None if slowest is None else medians[slowest],
                threshold=">= 10",
                holds=None if slowest is None else medians[slowest] >= 10,
                evidence=[f"{n}: {_spread(v, '.1f')}" for n, v in ratios.items()],
            )
        )
    return out


def _order(cfg):
    return ["original", "retrain", *cfg.methods]


def _bn_table(cfg, rows, bn) -> tuple[list[dict[str, Any]], str]:
    if not bn["rows"]:
        return [], ""
    classes = set(bn["classes"])
    train_rows = [
        {**r, "bn": "train"}
        for r in _with_drops(rows)
        if r["method"] in bn["methods"] and r["forget_class"] in classes
    ]
    eval_rows = _with_drops(
        [r for r in rows if r["method"] == "original" and r["forget_class"] in classes]
        + [dict(r) for r in bn["rows"]]
    )
    eval_rows = [r for r in eval_rows if r.get("bn") == "eval"]
    out = []
    for name in bn["methods"]:
        for mode, rs in (("train", train_rows), ("eval", eval_rows)):
            agg = _aggregate([r for r in rs if r["method"] == name], [name])
            if not agg:
                continue
            row = {**agg[0], "method": f"{name} bn={mode}"}
            if mode == "eval":
                e = {
                    (r["seed"], r["forget_class"]): r for r in rs if r["method"] == name
                }
                d = [
                    100
                    * (e[(t["seed"], t["forget_class"])]["acc_test"] - t["acc_test"])
                    for t in train_rows
                    if t["method"] == name and (t["seed"], t["forget_class"]) in e
                ]
                row["paired"] = _spread(d, ".2f")
            out.append(row)
    text = harness.table(
        out,
        [
            ("ACC_r %", "acc_test", ".2f", 100),
            ("ACC_f %", "acc_test_forget", ".2f", 100),
            ("drop vs original", "drop_vs_original", ".2f"),
            ("ACC_r eval - train (paired, points)", "paired"),
        ],
        label_title="method / BatchNorm",
    )
    return out, text


def _plots(workdir, cfg, rows) -> list[str]:
    """Confusion matrices of original / retrain / rwft_o (first seed and class)."""
    seed, fc = cfg.seeds[0], cfg.forget_classes[0]
    mats = {
        r["method"]: np.asarray(r["confusion"])
        for r in rows
        if r["seed"] == seed
        and r["forget_class"] == fc
        and r["method"] in ("original", "retrain", "rwft_o")
        and "confusion" in r
    }
    if not mats:
        return []
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    fig = Figure(figsize=(4 * len(mats), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(mats)))
    for ax, (name, mat) in zip(axes, mats.items(), strict=True):
        ev.plot_confusion(mat, ax=ax, title=f"{name} (forget class {fc})")
    ev.save_figure(fig, os.path.join(workdir, "confusion.png"))
    return ["confusion.png"]


def _report(cfg, parts, claims, plots, wall) -> list[str]:
    rows = _with_drops(parts["rows"])
    agg = _aggregate(rows, _order(cfg))
    p2 = PAPER["table2_resnet18_cifar10"]
    for a in agg:
        p = p2.get(a["method"])
        a["paper"] = " / ".join(f"{x:g}" for x in p) if p else None
        a["paper_mia_nn"] = PAPER["table1_mia_nn"].get(a["method"])
        a["paper_utv"] = PAPER["table4_utv"].get(a["method"])
    lines = [
        f"# RWFT class unlearning: {cfg.dataset} / {cfg.model}",
        "",
        f"Forget classes {list(cfg.forget_classes)} (one at a time), seeds"
        f" {list(cfg.seeds)}, train / test subsample {cfg.train_subsample} /"
        f" {cfg.test_subsample}. Mean ± std over classes and seeds (diverged runs"
        " left out of the means and flagged). ACC_r / ACC_f: test accuracy on"
        " retained / forgotten classes (%); drop: ACC_r of the original (or of"
        " the retrained model) minus the method's, paired per (seed, class), in"
        " points. MIA: SalUn/RWFT SVC attack, % of forget-train samples predicted"
        " non-member (retrain ~100). MIA-NN: fraction of forget-class test samples"
        " not classified as the neighbour class by the nearest-class attack"
        " (lower is better; neighbour from the retrained model's confusion"
        " matrix). UTV: total variation to the retrained model on the forget set"
        " (lower is better). Time: unlearning (or training) run time in seconds,"
        f" compilation excluded. Wall time of this invocation {wall:.0f} s"
        f" ({jax.default_backend()}).",
        "",
        harness.table(
            agg,
            [
                ("ACC_r", "acc_test", ".2f", 100),
                ("ACC_f", "acc_test_forget", ".2f", 100),
                ("drop vs original", "drop_vs_original", ".2f"),
                ("drop vs retrain", "drop_vs_retrain", ".2f"),
                ("MIA", "mia_svc", ".1f"),
                ("MIA-NN", "mia_nn", ".3f"),
                ("UTV", "utv", ".4f"),
                ("time_s", "time", ".2f"),
                ("paper (R18/CIFAR-10) ACC_r / ACC_f / MIA", "paper"),
            ],
        ),
        "",
        "Paper values beside ours for MIA-NN (Table 1) and UTV (Table 4):",
        "",
        harness.table(
            [a for a in agg if a["method"] != "original"],
            [
                ("MIA-NN ours", "mia_nn", ".3f"),
                ("MIA-NN paper", "paper_mia_nn", ".4f"),
                ("UTV ours", "utv", ".4f"),
                ("UTV paper", "paper_utv", ".4f"),
            ],
            drop_empty=False,
        ),
    ]
    flagged = [r for r in parts["rows"] if r.get("flag")]
    if flagged:
        lines += [
            "",
            "Flagged runs: "
            + "; ".join(
                f"{r['method']} seed {r['seed']} class {r['forget_class']}: {r['flag']}"
                for r in flagged
            ),
        ]
    if parts["ulira"]:
        lines += [
            "",
            f"U-LiRA (Table 3; first forget class, {cfg.ulira_models} +"
            f" {cfg.ulira_models} shadow models):",
            "",
            harness.table(
                [
                    {**r, "paper": PAPER["table3_ulira"].get(r["method"])}
                    for r in parts["ulira"]
                ],
                [
                    ("U-LiRA acc. (%)", "target_unlearned_rate", ".1f", 100),
                    (
                        "held-out balanced acc. (%)",
                        "heldout_balanced_accuracy",
                        ".1f",
                        100,
                    ),
                    ("paper", "paper", "g"),
                ],
            ),
        ]
    if parts["multi_class"]:
        lines += [
            "",
            "Forgetting several classes at once (Table 9):",
            "",
            harness.table(
                [
                    {**r, "run": f"{r['classes']} seed {r['seed']} {r['method']}"}
                    for r in parts["multi_class"]
                ],
                [
                    ("ACC_r", "acc_test", ".2f", 100),
                    ("ACC_f", "acc_test_forget", ".2f", 100),
                    ("MIA", "mia_svc", ".1f"),
                ],
                label="run",
                label_title="classes / seed / method",
            ),
        ]
    bn = parts["bn_ablation"]
    _, bn_text = _bn_table(cfg, parts["rows"], bn)
    if bn_text:
        lines += [
            "",
            f"## BatchNorm ablation (forget classes {bn['classes']}: largest mean"
            f" ACC_r drop of {bn['ranked_by']})",
            "",
            'bn="train" (the default) updates the trainable groups\' BatchNorm'
            ' statistics during unlearning; bn="eval" keeps them at the original'
            " model's values (frozen groups run in eval mode either way). Same"
            " seeds, classes and keys; the last column pairs each eval run with"
            " its train run.",
            "",
            bn_text,
        ]
    lines += [
        "",
        "## What the paper's claims look like here",
        "",
        harness.render_claims(claims, details=True),
    ]
    lines += [""] + [f"![{p}]({p})" for p in plots]
    return lines


def _finish(cfg, rd, parts, wall, *, extra=None) -> dict[str, Any]:
    rows = parts["rows"]
    claims = _claims(cfg, _with_drops(rows), parts["ulira"])
    plots = _plots(rd.workdir, cfg, rows)
    rd.write_report(_report(cfg, parts, claims, plots, wall))
    bn_rows, _ = _bn_table(cfg, rows, parts["bn_ablation"])
    return harness.finish(
        rd,
        claims,
        wall_time_s=wall,
        paper=PAPER,
        manifest={"cases": parts["manifests"]},
        **parts,
        aggregate=_aggregate(_with_drops(rows), _order(cfg)),
        bn_ablation_table=bn_rows,
        **(extra or {}),
    )


def _config_from_json(c: dict[str, Any]) -> Config:
    c = dict(c)
    c["training"] = train.TrainConfig(**c["training"])
    c["methods"] = {k: (v[0], dict(v[1])) for k, v in c["methods"].items()}
    for k in (
        "forget_classes",
        "seeds",
        "ulira_methods",
        "multi_class_methods",
        "bn_ablation_methods",
    ):
        if k in c:
            c[k] = tuple(c[k])
    c["multi_class"] = tuple(tuple(x) for x in c["multi_class"])
    known = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in c.items() if k in known})


def rebuild_report(workdir: str) -> dict[str, Any]:
    """Re-renders report.md / results.json from a finished run (no training)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist: run the experiment first.")
    with open(path) as f:
        saved = json.load(f)
    if "claims" not in saved or "manifests" not in saved:
        raise UsageError(f"{path} is from an older driver: rerun the experiment.")
    cfg = _config_from_json(saved["config"])
    rd = harness.RunDir(workdir, saved["config"])
    rd.computed, rd.resumed = saved["rows_computed"], saved["rows_resumed"]
    parts = {
        k: saved[k]
        for k in ("rows", "ulira", "multi_class", "bn_ablation", "manifests")
    }
    return _finish(cfg, rd, parts, saved.get("wall_time_s", 0.0))


def main(argv=None):
    return harness.driver_main(
        argv,
        description=__doc__.split("\n")[0],
        get_config=get_config,
        run=run,
        presets=("cpu", "full", "smoke"),
        workdir="runs/rwft",
        int_overrides={"classes": "forget_classes", "seeds": "seeds"},
        rebuild=rebuild_report,
    )


if __name__ == "__main__":
    main()
