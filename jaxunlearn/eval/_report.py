"""``evaluate``: every metric of the four papers in one call, and its report.

Metrics are chosen by name; each computes from cached eval-mode logits of the
evaluated model (and of the retrained reference or shadow models when given),
records its own version, and never swallows an exception: a metric whose
inputs are missing raises a ``ValueError`` saying what to pass.
"""

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxunlearn.eval import _attacks, _lira, _metrics
from jaxunlearn.eval._basic import accuracy, per_example_loss
from jaxunlearn.eval._mia import mia_logreg

DEFAULT_METRICS = ("accuracy", "mia_logreg", "nomus")
_OPTIONS = ("mia_feature", "neighbour_class", "rmia_gamma")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _true_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _softmax(logits.astype(np.float64))[np.arange(len(labels)), labels]


def _phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(_metrics.logit_confidence(logits, labels), np.float64)


def shadow_pool(split) -> tuple[dict[str, np.ndarray], dict[str, slice]]:
    """The example pool for shadow / reference models of a split.

    ``retain``, ``forget`` and ``test`` concatenated in that order, so shadow
    models (``train.train_shadow_models(model, pool, ...)``) see members and
    non-members of the target alike, each with probability ``p_in``.

    Returns:
      ``(pool, segments)``: ``pool`` is ``{"image", "label"}``; ``segments``
      maps each part name to its slice of the pool.
    """
    parts = ("retain", "forget", "test")
    pool = {
        k: np.concatenate([getattr(split, p)[k] for p in parts])
        for k in ("image", "label")
    }
    segments, start = {}, 0
    for p in parts:
        n = len(getattr(split, p)["label"])
        segments[p] = slice(start, start + n)
        start += n
    return pool, segments


class _Context:
    """Lazily computed inputs shared by the metrics."""

    def __init__(self, split, logits_fn, retrained_logits_fn, shadow, seed, options):
        self.split = split
        self.seed = seed
        self.options = options
        self.shadow = shadow
        self._logits_fn = logits_fn
        self._ref_fn = retrained_logits_fn
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        test = split.test
        if split.mode == "class":
            self.unseen_mask = np.isin(test["label"], split.forget_classes)
        else:
            self.unseen_mask = np.ones(len(test["label"]), bool)

    def logits(self, part: str, model: str = "target") -> np.ndarray:
        key = (model, part)
        if key not in self._cache:
            fn = self._logits_fn if model == "target" else self._ref_fn
            if fn is None:
                raise ValueError(
                    "this metric needs the retrained reference: pass "
                    "retrained_logits_fn="
                )
            name = "logits_fn" if model == "target" else "retrained_logits_fn"
            images = getattr(self.split, part)["image"]
            logits = np.asarray(fn(images))
            if logits.ndim != 2 or logits.shape[0] != len(images):
                raise ValueError(
                    f"{name} must return logits [N, C] with N = {len(images)} "
                    f"(the {part} images), got shape {logits.shape}."
                )
            if logits.shape[1] != self.split.num_classes:
                raise ValueError(
                    f"{name} returned {logits.shape[1]} classes, but the split "
                    f"has num_classes={self.split.num_classes}."
                )
            self._cache[key] = logits
        return self._cache[key]

    def labels(self, part: str) -> np.ndarray:
        return getattr(self.split, part)["label"]

    def losses(self, part: str) -> np.ndarray:
        return per_example_loss(self.logits(part), self.labels(part))

    def need_shadow(self, metric: str):
        if self.shadow is None:
            raise ValueError(
                f"{metric} needs shadow models: pass shadow=train.train_shadow_models("
                "model, eval.shadow_pool(split)[0], ...)."
            )
        pool, segments = shadow_pool(self.split)
        n = len(pool["label"])
        if self.shadow.logits["train"].shape[1] != n:
            raise ValueError(
                f"shadow models were trained on a pool of"
                f" {self.shadow.logits['train'].shape[1]} examples, but"
                f" eval.shadow_pool(split) has {n}."
            )
        return pool, segments


def _m_accuracy(ctx: _Context) -> dict[str, float]:
    out = {
        "acc_retain": accuracy(ctx.logits("retain"), ctx.labels("retain")),
        "acc_forget": accuracy(ctx.logits("forget"), ctx.labels("forget")),
    }
    test_logits, test_labels = ctx.logits("test"), ctx.labels("test")
    if ctx.split.mode == "class":
        keep = ~ctx.unseen_mask
        out["acc_test"] = accuracy(test_logits[keep], test_labels[keep])
        out["acc_test_forget"] = accuracy(
            test_logits[ctx.unseen_mask], test_labels[ctx.unseen_mask]
        )
    else:
        out["acc_test"] = accuracy(test_logits, test_labels)
    return out


def _m_mia_logreg(ctx: _Context) -> dict[str, float]:
    forget = ctx.losses("forget")
    unseen = ctx.losses("test")[ctx.unseen_mask]
    if not (np.isfinite(forget).all() and np.isfinite(unseen).all()):
        raise ValueError("mia_logreg: the model produced non-finite losses (diverged).")
    if ctx.options.get("mia_feature", "loss") == "log_loss":
        forget, unseen = np.log(forget + 1e-12), np.log(unseen + 1e-12)
    r = mia_logreg(forget, unseen, seed=ctx.seed)
    return {
        "mia_accuracy": r["accuracy"],
        "mia_auc": r["auc"],
        "forgetting_score": _metrics.forgetting_score(r["accuracy"]),
        "mia_n": r["n_member"],
    }


def _m_loss_threshold(ctx: _Context) -> dict[str, float]:
    forget = ctx.losses("forget")
    unseen = ctx.losses("test")[ctx.unseen_mask]
    scores = -np.concatenate([forget, unseen])  # low loss = member
    member = np.concatenate([np.ones(len(forget), bool), np.zeros(len(unseen), bool)])
    r = _lira.roc_metrics(np.nan_to_num(scores, nan=-np.inf), member)
    return {f"loss_{k}": v for k, v in r.items()}


def _m_nomus(ctx: _Context, values: Mapping[str, float]) -> dict[str, float]:
    return {"nomus": _metrics.nomus(values["acc_test"], values["forgetting_score"])}


def _m_utv(ctx: _Context) -> dict[str, float]:
    p_r = _softmax(ctx.logits("forget", "retrained").astype(np.float64))
    p_u = _softmax(ctx.logits("forget").astype(np.float64))
    return {"utv": _metrics.utv(p_r, p_u)}


def _m_mia_svc(ctx: _Context) -> dict[str, float]:
    retained_test = ~ctx.unseen_mask if ctx.split.mode == "class" else ctx.unseen_mask
    member = _true_prob(ctx.logits("retain"), ctx.labels("retain"))
    nonmember = _true_prob(ctx.logits("test"), ctx.labels("test"))[retained_test]
    target = _true_prob(ctx.logits("forget"), ctx.labels("forget"))
    return {
        "mia_svc": _attacks.mia_svc_confidence(member, nonmember, target, seed=ctx.seed)
    }


def _m_mia_nn(ctx: _Context) -> dict[str, float]:
    if ctx.split.mode != "class" or len(ctx.split.forget_classes) != 1:
        raise ValueError("mia_nn needs class forgetting of exactly one class.")
    forget_class = ctx.split.forget_classes[0]
    neighbour = ctx.options.get("neighbour_class")
    if neighbour is None:
        ref = ctx.logits("test", "retrained")
        labels = ctx.labels("test")
        rows = ref[labels == forget_class].argmax(-1)
        row = np.bincount(rows, minlength=ref.shape[1])
        neighbour = _attacks.nearest_class(row, forget_class)
    probs = _softmax(ctx.logits("test").astype(np.float64))
    value = _attacks.mia_nn(
        probs,
        ctx.labels("test"),
        forget_class=forget_class,
        neighbour_class=int(neighbour),
        seed=ctx.seed,
    )
    return {"mia_nn": value, "mia_nn_neighbour": int(neighbour)}


def _m_phi_logreg_auc(ctx: _Context) -> dict[str, float]:
    forget = _phi(ctx.logits("forget"), ctx.labels("forget"))
    test = _phi(ctx.logits("test"), ctx.labels("test"))[ctx.unseen_mask]
    rng = np.random.default_rng(ctx.seed)  # the score truncates prefixes
    return {
        "phi_logreg_auc": _attacks.phi_logreg_auc(
            rng.permutation(forget), rng.permutation(test), seed=ctx.seed
        )
    }


def _shadow_scores(ctx: _Context, metric: str):
    pool, seg = ctx.need_shadow(metric)
    labels = pool["label"]
    target_logits = np.concatenate(
        [ctx.logits(p) for p in ("retain", "forget", "test")]
    )
    return pool, seg, labels, target_logits


def _m_lira(ctx: _Context) -> dict[str, float]:
    pool, seg, labels, target_logits = _shadow_scores(ctx, "lira")
    shadow_logits = ctx.shadow.logits["train"]
    phi_t = _metrics.logit_confidence(target_logits, labels)
    phi_s = jax.vmap(_metrics.logit_confidence, in_axes=(0, None))(
        shadow_logits, labels
    )
    scores = np.asarray(_lira.lira(phi_t, phi_s, ctx.shadow.inclusion))
    test_idx = np.arange(seg["test"].start, seg["test"].stop)[ctx.unseen_mask]
    s = np.concatenate([scores[seg["forget"]], scores[test_idx]])
    member = np.concatenate(
        [
            np.ones(seg["forget"].stop - seg["forget"].start, bool),
            np.zeros(len(test_idx), bool),
        ]
    )
    r = _lira.roc_metrics(s, member)
    return {f"lira_{k}": v for k, v in r.items()}


def _m_rmia(ctx: _Context) -> dict[str, float]:
    pool, seg, labels, target_logits = _shadow_scores(ctx, "rmia")
    p_t = _true_prob(target_logits, labels)
    p_ref = np.stack([_true_prob(lg, labels) for lg in ctx.shadow.logits["train"]])
    test_idx = np.arange(seg["test"].start, seg["test"].stop)
    unseen_idx = test_idx[ctx.unseen_mask]
    forget_idx = np.arange(seg["forget"].start, seg["forget"].stop)
    targets = np.concatenate([forget_idx, unseen_idx])
    # Population z: all held-out test examples (non-members of the target).
    scores = np.asarray(
        _lira.rmia(
            p_t[targets],
            p_ref[:, targets],
            p_t[test_idx],
            p_ref[:, test_idx],
            gamma=ctx.options.get("rmia_gamma", 2.0),
        )
    )
    member = np.concatenate(
        [np.ones(len(forget_idx), bool), np.zeros(len(unseen_idx), bool)]
    )
    r = _lira.roc_metrics(scores, member)
    return {f"rmia_{k}": v for k, v in r.items()}


# name -> (function, version, metrics it needs first)
_METRICS: dict[str, tuple[Callable, str, tuple[str, ...]]] = {
    "accuracy": (_m_accuracy, "1", ()),
    "mia_logreg": (_m_mia_logreg, "2", ()),  # 2: standardised, own splits
    "loss_threshold": (_m_loss_threshold, "1", ()),
    "nomus": (_m_nomus, "1", ("accuracy", "mia_logreg")),
    "utv": (_m_utv, "1", ()),
    "mia_svc": (_m_mia_svc, "1", ()),
    "mia_nn": (_m_mia_nn, "1", ()),
    "phi_logreg_auc": (_m_phi_logreg_auc, "1", ()),
    "lira": (_m_lira, "1", ()),
    "rmia": (_m_rmia, "1", ()),
}


def metric_names() -> tuple[str, ...]:
    """Names accepted by :func:`evaluate`'s ``metrics``."""
    return tuple(_METRICS)


@dataclasses.dataclass
class EvalReport:
    """The result of :func:`evaluate`.

    Attributes:
      values: ``{name: number}``, flat, JSON-serialisable.
      metrics: the metric names that ran, in order.
      metric_versions: ``{metric: version}``.
      versions: package versions.
      arrays: per-example arrays kept for plots (losses, scores); not in
        :meth:`to_dict`.
    """

    values: dict[str, float]
    metrics: tuple[str, ...]
    metric_versions: dict[str, str]
    versions: dict[str, str]
    arrays: dict[str, np.ndarray] = dataclasses.field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": dict(self.values),
            "metrics": list(self.metrics),
            "metric_versions": dict(self.metric_versions),
            "versions": dict(self.versions),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        """A two-column Markdown table of the values."""
        lines = ["| metric | value |", "|---|---|"]
        for k, v in self.values.items():
            cell = f"{v:.4f}" if isinstance(v, float) else str(v)
            lines.append(f"| {k} | {cell} |")
        return "\n".join(lines)

    def save_plots(self, directory: str, *, prefix: str = "") -> list[str]:
        """Writes the standard plots (loss histograms, ROC) as PNGs."""
        import os

        from jaxunlearn.eval import _plots

        paths = []
        if "forget_losses" in self.arrays:
            fig = _plots.plot_loss_histograms(
                self.arrays["forget_losses"], self.arrays["unseen_losses"]
            )
            p = os.path.join(directory, f"{prefix}loss_hist.png")
            _plots.save_figure(fig, p)
            paths.append(p)
            scores = np.concatenate(
                [-self.arrays["forget_losses"], -self.arrays["unseen_losses"]]
            )
            member = np.concatenate(
                [
                    np.ones(len(self.arrays["forget_losses"]), bool),
                    np.zeros(len(self.arrays["unseen_losses"]), bool),
                ]
            )
            for log in (False, True):
                fig = _plots.plot_roc({"loss": (scores, member)}, log=log)
                p = os.path.join(directory, f"{prefix}roc{'_log' if log else ''}.png")
                _plots.save_figure(fig, p)
                paths.append(p)
        return paths


def evaluate(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    split,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    retrained_logits_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    shadow=None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Evaluates one model on an ``UnlearningData`` with the requested metrics.

    ``eval`` never runs a model itself: the caller passes a function from
    images to logits, e.g. ``lambda x: train.predict(apply_fn, variables, x)``
    (batched, jitted once). Each split part is passed through it once.

    Args:
      logits_fn: ``images [N, ...] -> logits [N, C]`` of the evaluated model
        (numpy in; numpy or jax out).
      split: the ``UnlearningData``.
      metrics: names from :func:`metric_names`:
        ``accuracy`` (retain / forget / test; class mode splits test into
        retained and forgotten classes), ``mia_logreg`` (DLFD's loss attack,
        forget vs unseen, plus the forgetting score 2|acc - 0.5|; raw losses
        as in DLFD, or ``options["mia_feature"] = "log_loss"``),
        ``loss_threshold`` (Yeom et al.: ROC of the loss itself, low loss =
        member; AUC and TPR at low FPR, no training), ``nomus``,
        ``utv`` (needs ``retrained_logits_fn``), ``mia_svc`` (SalUn/RWFT
        MIA-efficacy, percent of forget predicted non-member), ``mia_nn``
        (RWFT; class mode; neighbour from ``retrained_logits_fn`` or
        ``options["neighbour_class"]``), ``phi_logreg_auc`` (the Blend code's
        score), ``lira`` and ``rmia`` (need ``shadow``: models trained on
        :func:`shadow_pool`). Unseen data is the test set, restricted to the
        forgotten classes in class mode.
      retrained_logits_fn: the same for the retrained reference model.
      shadow: a ``train.ShadowResult`` on ``shadow_pool(split)[0]``.
      seed: seed of the attacks' subsampling and splits.
      options: ``neighbour_class`` (mia_nn), ``rmia_gamma``, ``mia_feature``
        (``"loss"`` or ``"log_loss"``).

    Returns:
      An :class:`EvalReport`. ``values["diverged"]`` is True when the model's
      logits are not finite; then only ``accuracy`` is computed and the other
      requested metrics are absent (listed in ``metrics`` only if they ran).

    Raises:
      TypeError: if ``logits_fn`` / ``retrained_logits_fn`` is not callable,
        or ``metrics`` is a bare string.
      ValueError: on unknown metrics or options, logits of the wrong shape,
        or a metric whose inputs are missing.

    Examples:
      >>> from jaxunlearn import data, eval, models, train
      >>> split = data.split(data.load("digits"), "random", forget_fraction=0.1)
      >>> model = models.get_model("mlp", 10, hidden=(32,))
      >>> v, _ = train.train_original(model, split, train.TrainConfig(epochs=3))
      >>> apply_fn = models.make_apply_fn(model)
      >>> r = eval.evaluate(lambda x: train.predict(apply_fn, v, x), split)
      >>> sorted(r.values)[:3]
      ['acc_forget', 'acc_retain', 'acc_test']
    """
    from jaxunlearn import cache

    for name, fn in (
        ("logits_fn", logits_fn),
        ("retrained_logits_fn", retrained_logits_fn),
    ):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"{name} must be a function from images to logits, e.g. "
                f"lambda x: train.predict(apply_fn, variables, x); got "
                f"{type(fn).__name__}."
            )
    if logits_fn is None:
        raise TypeError("logits_fn must be a function from images to logits.")
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, got str {metrics!r}.")
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; valid: {metric_names()}.")
    options = dict(options or {})
    bad = sorted(set(options) - set(_OPTIONS))
    if bad:
        raise ValueError(f"unknown options {bad}; valid: {_OPTIONS}.")
    if options.get("mia_feature", "loss") not in ("loss", "log_loss"):
        raise ValueError(
            "options['mia_feature'] must be 'loss' or 'log_loss', got "
            f"{options['mia_feature']!r}."
        )

    ctx = _Context(split, logits_fn, retrained_logits_fn, shadow, seed, options)
    order: list[str] = []
    for m in metrics:
        for dep in _METRICS[m][2] + (m,):
            if dep not in order:
                order.append(dep)
    values: dict[str, Any] = {}
    finite = all(
        np.isfinite(ctx.logits(part)).all() for part in ("retain", "forget", "test")
    )
    values["diverged"] = not finite
    if not finite:
        # A diverged model (inf / nan logits) has accuracies but no meaningful
        # attack or distance: say so explicitly instead of feeding non-finite
        # values to the metrics (which would raise).
        order = [m for m in order if m == "accuracy"]
    for m in order:
        fn, _, deps = _METRICS[m]
        values.update(fn(ctx, values) if deps else fn(ctx))
    arrays = (
        {
            "forget_losses": ctx.losses("forget"),
            "unseen_losses": ctx.losses("test")[ctx.unseen_mask],
        }
        if finite
        else {}
    )
    return EvalReport(
        values=values,
        metrics=tuple(order),
        metric_versions={m: _METRICS[m][1] for m in order},
        versions=cache.versions(),
        arrays=arrays,
    )
