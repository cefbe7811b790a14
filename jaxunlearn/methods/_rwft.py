"""RWFT: class unlearning by fine-tuning towards reweighted output distributions.

The target q* is computed from the FROZEN original model (kept in
``state.extra["teacher"]``) on each forget batch, so it never drifts with the
model being trained; the loss is the soft-label cross-entropy to q* on
forget-class samples only (an epoch is one pass over the forget set). An
optional retain cross-entropy term is off by default, as in the paper.

References:
  Wang, Ebrahimpour-Boroojeny, Sundaram, "Reweighted Output Distributions for
  Class Unlearning" (arXiv 2506.20893 v1), Sec. 3 and App. A.3: 10 epochs,
  learning rate 1e-3; optimizer and batch size unstated (SGD, momentum 0.9).
"""

from collections.abc import Sequence

import jax
import optax

from jaxunlearn import losses, models
from jaxunlearn.methods._base import (
    Method,
    check_hparam,
    gradient_method,
    register,
    sgd_tx,
)
from jaxunlearn.methods._common import batch_ce
from jaxunlearn.types import ApplyFn

BN_MODES = ("train", "eval")
"""BatchNorm of the trainable groups during RWFT's forget-only training.
``"train"``: batch statistics in the forward pass and running averages
updated; ``"eval"``: running averages used and never updated. Frozen groups
are frozen whole either way: their BatchNorm layers run in eval mode."""


def intermediate_group(groups: Sequence[str]) -> str:
    """The "one intermediate block" RWFT-2-O trains besides the head.

    ResNet: ``layer3`` (RWFT Table 7: "Layer 3 + Last" reproduces Table 2).
    Other models (VGG ``block1..5``, CNN / ConvNet-3 ``block1..3``, MLP
    ``block1..K``): the second-to-last stage, the analogue of ``layer3``.
    """
    groups = sorted(groups)
    if "layer3" in groups:
        return "layer3"
    stages = sorted(g for g in groups if g.startswith("block"))
    if not stages:
        raise ValueError(f"no intermediate stage among parameter groups {groups}.")
    return stages[-2] if len(stages) >= 2 else stages[-1]


def middle_group(groups: Sequence[str]) -> str:
    """Where RW-A inserts its middle adapter: after this top-level stage.

    ResNet: ``layer2`` (the "middle residual stage"). Other models: the middle
    ``block`` (CNN / ConvNet-3: ``block2``,
    VGG: ``block3``, a 2-block MLP: ``block1``).
    """
    groups = sorted(groups)
    if "layer2" in groups:
        return "layer2"
    stages = sorted(g for g in groups if g.startswith("block"))
    if not stages:
        raise ValueError(f"no middle stage among parameter groups {groups}.")
    return stages[(len(stages) - 1) // 2]


def _rwft(
    apply_fn: ApplyFn,
    *,
    forget_classes: int | Sequence[int] | None,
    strategy: str,
    tx: optax.GradientTransformation | None,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    retain_weight: float,
    trainable,
    bn: str = "train",
    prepare=None,
) -> Method:
    if bn not in BN_MODES:
        raise ValueError(f"`bn` must be one of {BN_MODES}, got {bn!r}.")
    check_hparam("retain_weight", retain_weight, high=1.0)
    train_mode = bn == "train"
    if forget_classes is None:
        raise ValueError("RWFT needs forget_classes= (an int or a sequence).")
    if strategy not in losses.STRATEGIES:
        raise ValueError(
            f"strategy must be one of {losses.STRATEGIES}, got {strategy!r}."
        )
    use_retain = retain_weight > 0

    def loss_fn(variables, batch, key, hparams, extra, step):
        part = batch["forget"]
        teacher_logits, _ = apply_fn(extra["teacher"], part["image"], train=False)
        q = losses.reweighted_targets(
            jax.lax.stop_gradient(teacher_logits), forget_classes, strategy=strategy
        )
        logits, variables = apply_fn(
            variables, part["image"], train=train_mode, key=key, mask=part["mask"]
        )
        loss = losses.masked_mean(losses.soft_cross_entropy(logits, q), part["mask"])
        metrics = {"rw_ce": loss}
        if use_retain:
            ce_r, variables, acc_r = batch_ce(
                apply_fn,
                variables,
                batch["retain"],
                jax.random.fold_in(key, 1),
                train=train_mode,
            )
            loss = loss + hparams["retain_weight"] * ce_r
            metrics.update(retain_ce=ce_r, retain_acc=acc_r)
        return loss, (variables, metrics)

    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    hparams = {"retain_weight": retain_weight} if use_retain else None
    return gradient_method(
        loss_fn,
        tx,
        learning_rate=lr,
        trainable=trainable,
        driver="forget",
        hparams=hparams,
        make_extra=lambda v: {"teacher": _without_adapters(v)},
        prepare=prepare,
    )


def _without_adapters(variables):
    params = {k: v for k, v in variables["params"].items() if k != models.ADAPTERS}
    return {**variables, "params": params}


@register("rwft_o")
def rwft_o(
    apply_fn: ApplyFn,
    *,
    forget_classes: int | Sequence[int] | None = None,
    strategy: str = "proportional",
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    retain_weight: float = 0.0,
    bn: str = "train",
) -> Method:
    """RWFT-O: fine-tune all parameters towards q* on forget-class samples.

    Args:
      apply_fn: model apply function.
      forget_classes: the class(es) to forget.
      strategy: ``"proportional"`` (Eq. 3) or ``"max"`` (Eqs. 5-6).
      retain_weight: weight of an optional retain cross-entropy term (0 = off,
        the paper's setting), in [0, 1].
      bn: ``"train"`` (default) or ``"eval"`` for the trainable groups,
        see :data:`BN_MODES`. The paper does not say.

    Examples:
      >>> import jax
      >>> from jaxunlearn import methods, models
      >>> model = models.get_model("mlp", 3, hidden=(4,))
      >>> m = methods.get("rwft_o", apply_fn=models.make_apply_fn(model),
      ...                 forget_classes=0)
      >>> m.driver
      'forget'
    """
    return _rwft(
        apply_fn,
        forget_classes=forget_classes,
        strategy=strategy,
        tx=tx,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        retain_weight=retain_weight,
        trainable=None,
        bn=bn,
    )


@register("rwft_2_o")
def rwft_2_o(
    apply_fn: ApplyFn,
    *,
    forget_classes: int | Sequence[int] | None = None,
    strategy: str = "proportional",
    trainable: Sequence[str] | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    retain_weight: float = 0.0,
    bn: str = "train",
) -> Method:
    """RWFT-2-O: like RWFT-O but only one intermediate stage plus the head train.

    ``trainable`` defaults to ``(intermediate_group(groups), "head")``, chosen
    from the model's parameter groups when the state is initialised (ResNet:
    ``layer3`` + ``head``; others: second-to-last stage + ``head``). Frozen
    groups get exactly zero updates (``optax.multi_transform``) and run their
    BatchNorm layers in eval mode (running averages, never updated); ``bn``
    (see :data:`BN_MODES`) sets the BatchNorm mode of the trainable groups.
    """
    if trainable is None:

        def trainable(params):
            return (intermediate_group(tuple(params)), "head")

    return _rwft(
        apply_fn,
        forget_classes=forget_classes,
        strategy=strategy,
        tx=tx,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        retain_weight=retain_weight,
        trainable=trainable,
        bn=bn,
    )


@register("rw_a")
def rw_a(
    apply_fn: ApplyFn,
    *,
    forget_classes: int | Sequence[int] | None = None,
    example_input=None,
    strategy: str = "proportional",
    stage: str | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> Method:
    """RW-A: the original network frozen, two identity-initialised adapters trained.

    The paper leaves the adapters' architecture open ("one inserted in the
    middle residual stage and one appended after the final linear layer").
    Ours: a channel-wise linear map (a 1x1 convolution for conv features,
    ``y @ K + b`` with ``K = I``, ``b = 0`` at init) after the top-level stage
    :func:`middle_group` (ResNet ``layer2``), and a ``C x C`` linear map on the
    logits, also the identity at init. They live in
    ``variables["params"]["adapters"]`` (``models.ADAPTERS``), which
    ``models.forward`` applies, so the unlearned model is evaluated by the same
    ``apply_fn``. Only the adapters train (exact zero updates elsewhere) and the
    base network runs in eval mode, so BatchNorm statistics stay frozen too.
    Weight decay defaults to 0 (decay would pull the adapters towards 0, not
    towards the identity).

    Args:
      apply_fn: ``models.make_apply_fn(model)``.
      forget_classes: the class(es) to forget.
      example_input: an input batch (shape and dtype) to size the adapters.
      strategy: ``"proportional"`` or ``"max"``.
      stage: override the stage after which the middle adapter goes.
    """
    if example_input is None:
        raise ValueError("rw_a needs example_input= (a batch of inputs).")

    def prepare(variables):
        widths = models.stage_widths(apply_fn, variables, example_input)
        where = stage or middle_group(
            [g for g in variables["params"] if g != models.ADAPTERS]
        )
        if where not in widths:
            raise ValueError(f"stage {where!r} not among {sorted(widths)}.")
        eye = {
            name: {
                "kernel": jax.numpy.eye(widths[name]),
                "bias": jax.numpy.zeros((widths[name],)),
            }
            for name in (where, "logits")
        }
        base = _without_adapters(variables)
        return {**base, "params": {**base["params"], models.ADAPTERS: eye}}

    return _rwft(
        apply_fn,
        forget_classes=forget_classes,
        strategy=strategy,
        tx=tx,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        retain_weight=0.0,
        trainable=models.ADAPTERS,
        bn="eval",
        prepare=prepare,
    )
