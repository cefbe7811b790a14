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
    default_tx,
    freeze_except,
    gradient_method,
    register,
)
from jaxunlearn.methods._common import batch_ce, random_other_labels
from jaxunlearn.types import ApplyFn, PyTree


def _tx(tx, learning_rate, momentum, weight_decay, trainable):
    tx = default_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    return freeze_except(tx, trainable)


def random_label_loss(apply_fn, num_classes: int):
    """``CE(forget, random wrong labels) + w * CE(retain)``, fresh labels per step
    (shared by ``random_label`` and ``salun``)."""

    def loss_fn(variables, batch, key, hparams, extra):
        k_lab, k_f, k_r = jax.random.split(key, 3)
        fake = random_other_labels(k_lab, batch["forget"]["label"], num_classes)
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
    def loss_fn(variables, batch, key, hparams, extra):
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
    return gradient_method(
        _retain_ce(apply_fn), _tx(tx, learning_rate, momentum, weight_decay, trainable)
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
    return gradient_method(
        _retain_ce(apply_fn),
        default_tx(
            tx,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
        ),
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

    def loss_fn(variables, batch, key, hparams, extra):
        ce, variables, acc = batch_ce(apply_fn, variables, batch["forget"], key)
        return -ce, (variables, {"forget_ce": ce, "forget_acc": acc})

    return gradient_method(
        loss_fn,
        _tx(tx, learning_rate, momentum, weight_decay, trainable),
        driver="forget",
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

    def loss_fn(variables, batch, key, hparams, extra):
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

    return gradient_method(
        loss_fn,
        _tx(tx, learning_rate, momentum, weight_decay, trainable),
        hparams={"retain_weight": retain_weight},
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
) -> Method:
    """Random labels (RL): fit forget examples to random wrong labels.

    Loss: ``CE(forget, random label != y) + w * CE(retain, y)`` with
    ``w = state.hparams["retain_weight"]``; fresh random labels every step.
    An epoch runs over the retain set with forget batches cycled alongside, so
    the model trains on the relabelled forget set together with the retain set
    (as SalUn's RL does with their union).

    References:
      Golatkar et al. (2020); Fan et al., SalUn (ICLR 2024).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"random_label needs num_classes >= 2, got {num_classes!r}.")

    loss_fn = random_label_loss(apply_fn, num_classes)
    return gradient_method(
        loss_fn,
        _tx(tx, learning_rate, momentum, weight_decay, trainable),
        hparams={"retain_weight": retain_weight},
    )
