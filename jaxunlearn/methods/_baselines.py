"""First-order baselines: retrain, fine-tune (CF), NegGrad, NegGrad+, random labels.

Defaults follow ``docs/methods_notes.md`` where it has them (DLFD-repo
baselines: SGD, momentum 0.9, weight decay 5e-4; fine-tune lr 1e-3, NegGrad lr
1e-3). Drivers choose their own learning rate and epochs per data set.
"""

from collections.abc import Callable, Sequence

import jax
import optax

from jaxunlearn.methods._base import (
    Method,
    check_hparam,
    gradient_method,
    register,
    sgd_tx,
)
from jaxunlearn.methods._common import batch_ce, random_other_labels
from jaxunlearn.types import ApplyFn, PyTree


def _gm(objective, tx, learning_rate, momentum, weight_decay, **kw) -> Method:
    """``gradient_method`` with the factories' SGD defaults (sweepable rate)."""
    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    return gradient_method(objective, tx, learning_rate=lr, **kw)


LABEL_MODES = ("per_step", "per_example")


def random_forget_labels(key, part, num_classes: int, mode: str, extra):
    """Random labels for a forget batch.

    ``"per_step"``: fresh labels every step, never the true one.
    ``"per_example"``: one label per forget example, drawn once for the whole
    run from all ``num_classes`` classes (possibly the true one), with the
    reference codes' ``randint(0, C)`` (SalUn's code redraws such labels at
    every epoch; here they stay fixed for the run); the draw is
    ``randint(fold_in(extra["label_key"], index))`` of the example's
    index in the forget set, so it needs no table and is the same every epoch.
    """
    if mode == "per_step":
        return random_other_labels(key, part["label"], num_classes)
    if "index" not in part:
        raise ValueError(
            "per-example random labels need the batch's 'index' (gathered by "
            "jaxunlearn.data.gather)."
        )
    keys = jax.vmap(lambda i: jax.random.fold_in(extra["label_key"], i))(part["index"])
    return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes))(keys)


def check_label_mode(labels: str) -> None:
    if labels not in LABEL_MODES:
        raise ValueError(f"`labels` must be one of {LABEL_MODES}, got {labels!r}.")


def label_key_extra(labels: str, seed: int):
    """``state.extra`` entry holding the key of the per-example labels."""
    if labels != "per_example":
        return {}
    return {"label_key": jax.random.key_data(jax.random.key(seed))}


def random_label_loss(apply_fn, num_classes: int, labels: str = "per_step"):
    """``CE(forget, random labels) + w * CE(retain)`` (shared by
    ``random_label`` and ``salun``); ``labels`` as :func:`random_forget_labels`."""
    check_label_mode(labels)

    def loss_fn(variables, batch, key, hparams, extra, step):
        k_lab, k_f, k_r = jax.random.split(key, 3)
        ex = extra
        if labels == "per_example":
            ex = {"label_key": jax.random.wrap_key_data(extra["label_key"])}
        fake = random_forget_labels(k_lab, batch["forget"], num_classes, labels, ex)
        ce_f, variables, acc_f = batch_ce(
            apply_fn, variables, batch["forget"], k_f, labels=fake
        )
        ce_r, variables, acc_r = batch_ce(apply_fn, variables, batch["retain"], k_r)
        loss = ce_f + hparams["retain_weight"] * ce_r
        metrics = {
            "forget_random_ce": ce_f,
            "retain_ce": ce_r,
            "forget_acc": acc_f,
            "retain_acc": acc_r,
        }
        return loss, (variables, metrics)

    return loss_fn


def _retain_ce(apply_fn):
    def loss_fn(variables, batch, key, hparams, extra, step):
        loss, variables, acc = batch_ce(apply_fn, variables, batch["retain"], key)
        return loss, (variables, {"retain_ce": loss, "retain_acc": acc})

    return loss_fn


@register("finetune")
def finetune(
    apply_fn: ApplyFn,
    *,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    trainable: str | Sequence[str] | None = None,
) -> Method:
    """Fine-tuning on the retain set only ("FT" / catastrophic forgetting, CF).

    Minimises the retain cross-entropy; the forget set is never looked at.
    ``trainable`` restricts training to parameter groups (e.g. ``"head"`` gives
    CF-k style last-layer fine-tuning).

    References:
      Golatkar et al., Eternal Sunshine of the Spotless Net (CVPR 2020);
      defaults from the DLFD repository's fine-tune baseline.

    Examples:
      >>> import jax
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> x = jax.numpy.zeros((2, 2, 2, 1))
      >>> v = models.init(model, jax.random.key(0), x)
      >>> m = methods.finetune(models.make_apply_fn(model))
      >>> int(m.init(v).step)
      0
    """
    return _gm(
        _retain_ce(apply_fn),
        tx,
        learning_rate,
        momentum,
        weight_decay,
        trainable=trainable,
    )


@register("retrain")
def retrain(
    apply_fn: ApplyFn,
    *,
    init_fn: Callable[[jax.Array], PyTree] | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Method:
    """Retraining from scratch on the retain set: the exact-unlearning oracle.

    ``init`` discards the incoming variables and draws every parameter (and
    BatchNorm statistic) afresh from ``init_fn(key)``, so nothing of the
    original model survives. Training is plain cross-entropy on retain.

    Args:
      apply_fn: model apply function.
      init_fn: ``init_fn(key) -> variables``, e.g.
        ``lambda k: models.init(model, k, example_images)``. Required.
    """
    if init_fn is None:
        raise ValueError("retrain needs init_fn=(key -> fresh variables).")
    return _gm(
        _retain_ce(apply_fn),
        tx,
        learning_rate,
        momentum,
        weight_decay,
        reinit=init_fn,
    )


@register("neggrad")
def neggrad(
    apply_fn: ApplyFn,
    *,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    trainable: str | Sequence[str] | None = None,
) -> Method:
    """NegGrad / gradient ascent: maximise the forget cross-entropy.

    An epoch is one pass over the forget set; no retain term.

    References:
      Golatkar et al. (2020); Thudi et al. (2022). Defaults from the DLFD
      repository (SGD lr 1e-3, momentum 0.9, wd 5e-4, 1 epoch).
    """

    def loss_fn(variables, batch, key, hparams, extra, step):
        ce, variables, acc = batch_ce(apply_fn, variables, batch["forget"], key)
        return -ce, (variables, {"forget_ce": ce, "forget_acc": acc})

    return _gm(
        loss_fn,
        tx,
        learning_rate,
        momentum,
        weight_decay,
        driver="forget",
        trainable=trainable,
    )


@register("neggrad_plus")
def neggrad_plus(
    apply_fn: ApplyFn,
    *,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    retain_weight: float = 0.9,
    trainable: str | Sequence[str] | None = None,
) -> Method:
    """NegGrad+: ``beta * CE(retain) - (1 - beta) * CE(forget)``.

    ``beta`` is ``state.hparams["retain_weight"]`` (sweepable with vmap). An epoch
    runs over the retain set; forget batches are cycled alongside.

    References:
      Kurmanji et al., Towards Unbounded Machine Unlearning (NeurIPS 2023).
    """

    check_hparam("retain_weight", retain_weight, high=1.0)

    def loss_fn(variables, batch, key, hparams, extra, step):
        k_r, k_f = jax.random.split(key)
        ce_r, variables, acc_r = batch_ce(apply_fn, variables, batch["retain"], k_r)
        ce_f, variables, acc_f = batch_ce(apply_fn, variables, batch["forget"], k_f)
        beta = hparams["retain_weight"]
        loss = beta * ce_r - (1.0 - beta) * ce_f
        metrics = {
            "retain_ce": ce_r,
            "forget_ce": ce_f,
            "retain_acc": acc_r,
            "forget_acc": acc_f,
        }
        return loss, (variables, metrics)

    return _gm(
        loss_fn,
        tx,
        learning_rate,
        momentum,
        weight_decay,
        hparams={"retain_weight": retain_weight},
        trainable=trainable,
    )


@register("random_label")
def random_label(
    apply_fn: ApplyFn,
    *,
    num_classes: int | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    retain_weight: float = 1.0,
    trainable: str | Sequence[str] | None = None,
    labels: str = "per_step",
    label_seed: int = 0,
) -> Method:
    """Random labels (RL): fit forget examples to random labels.

    Loss: ``CE(forget, random label) + w * CE(retain, y)`` with
    ``w = state.hparams["retain_weight"]``. ``labels="per_step"`` (default)
    draws fresh wrong labels (never the true one) every step;
    ``labels="per_example"`` draws one label per forget example for the whole
    run from all classes (the reference codes' ``randint(0, C)``; SalUn's code
    redraws them each epoch), seeded by ``label_seed``.
    An epoch runs over the retain set with forget batches cycled alongside, so
    the model trains on the relabelled forget set together with the retain set
    (as SalUn's RL does with their union).

    References:
      Golatkar et al. (2020); Fan et al., SalUn (ICLR 2024).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"random_label needs num_classes >= 2, got {num_classes!r}.")

    check_hparam("retain_weight", retain_weight)
    loss_fn = random_label_loss(apply_fn, num_classes, labels)
    return _gm(
        loss_fn,
        tx,
        learning_rate,
        momentum,
        weight_decay,
        hparams={"retain_weight": retain_weight},
        trainable=trainable,
        make_extra=lambda v: label_key_extra(labels, label_seed),
    )
