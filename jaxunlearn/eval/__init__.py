"""Evaluation: accuracies, unlearning metrics, membership-inference attacks,
statistics over seeds, reports and plots.

Names follow the papers: ``forgetting_score`` / ``nomus`` (DLFD), ``utv`` /
``mia_nn`` / ``mia_svc_confidence`` (RWFT), ``phi_logreg_auc`` (the Blend
code's score), ``lira`` / ``ulira`` / ``rmia`` (shadow-model attacks) and
``roc_metrics``. :func:`evaluate` runs any of them by name on a logits
function (``images -> logits``; eval never imports ``train``) and an
``UnlearningData`` and returns an :class:`EvalReport`.

Functions take numpy or JAX arrays of logits / scores; the sklearn-based
attackers run on the host, the shadow-model scores are vectorised ``jnp``.
"""

from jaxunlearn.eval._attacks import (
    mia_nn,
    mia_svc_confidence,
    nearest_class,
    phi_logreg_auc,
)
from jaxunlearn.eval._basic import accuracy, per_example_loss
from jaxunlearn.eval._lira import lira, rmia, roc_metrics, ulira
from jaxunlearn.eval._metrics import (
    forgetting_score,
    logit_confidence,
    logit_confidence_from_probs,
    nomus,
    utv,
)
from jaxunlearn.eval._mia import mia_logreg
from jaxunlearn.eval._mia_jax import loss_mia_accuracy
from jaxunlearn.eval._plots import (
    confusion_matrix,
    plot_confusion,
    plot_embedding,
    plot_loss_histograms,
    plot_metric_bars,
    plot_roc,
    save_figure,
)
from jaxunlearn.eval._report import (
    DEFAULT_METRICS,
    EvalReport,
    evaluate,
    metric_names,
    shadow_pool,
)
from jaxunlearn.eval._stats import aggregate, bootstrap_ci, mean_std

__all__ = [
    "DEFAULT_METRICS",
    "accuracy",
    "aggregate",
    "bootstrap_ci",
    "confusion_matrix",
    "EvalReport",
    "evaluate",
    "forgetting_score",
    "lira",
    "loss_mia_accuracy",
    "logit_confidence",
    "logit_confidence_from_probs",
    "mean_std",
    "metric_names",
    "mia_logreg",
    "mia_nn",
    "mia_svc_confidence",
    "nearest_class",
    "nomus",
    "per_example_loss",
    "phi_logreg_auc",
    "plot_confusion",
    "plot_embedding",
    "plot_loss_histograms",
    "plot_metric_bars",
    "plot_roc",
    "rmia",
    "roc_metrics",
    "save_figure",
    "shadow_pool",
    "ulira",
    "utv",
]
