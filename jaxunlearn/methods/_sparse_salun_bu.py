"""Baselines of the RWFT tables: l1-sparse, SalUn and Boundary Shrink (BU).

Defaults follow the papers' public code (Unlearn-Sparse / Unlearn-Saliency); drivers set
learning rates and epochs.
"""

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import losses
from jaxunlearn.methods._base import (
    Method,
    check_hparam,
    gradient_method,
    register,
    sgd_tx,
)
from jaxunlearn.methods._baselines import label_key_extra, random_label_loss
from jaxunlearn.methods._common import batch_ce
from jaxunlearn.types import ApplyFn


def _l1(params) -> jax.Array:
    return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


L1_DECAYS = ("linear", "linear_epoch", "constant")


@register("l1_sparse")
def l1_sparse(
    apply_fn: ApplyFn,
    *,
    alpha: float = 1e-4,
    decay: str = "linear",
    decay_steps: int | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Method:
    """l1-sparse unlearning: retain cross-entropy plus ``alpha_t * ||theta||_1``.

    ``decay="linear"`` (default; Jia et al.'s linear decay to 0 over the run,
    per step): ``alpha_t = alpha * max(0, 1 - t / T)`` with ``T =
    decay_steps``, by default the length of the run (``train.unlearn`` passes
    ``num_steps`` to ``init``; calling ``init`` yourself, pass ``num_steps=``
    or give ``decay_steps``). ``decay="linear_epoch"``: the reference code's
    per-epoch form ``alpha * (1 - e / E)``, constant within epoch ``e`` of
    ``E`` (needs ``num_steps`` and ``steps_per_epoch``, which
    ``train.unlearn`` passes). ``decay="constant"`` keeps ``alpha``. ``alpha`` is
    ``state.hparams["alpha"]`` and can be swept with vmap.

    References:
      Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS
      2023); R18 defaults alpha 1e-4, lr 1e-2.
    """
    if decay not in L1_DECAYS:
        raise ValueError(f"`decay` must be one of {L1_DECAYS}, got {decay!r}.")
    if decay_steps is not None and (
        isinstance(decay_steps, bool)
        or not isinstance(decay_steps, int)
        or decay_steps < 1
    ):
        raise ValueError(f"`decay_steps` must be an int >= 1, got {decay_steps!r}.")
    check_hparam("alpha", alpha)

    def loss_fn(variables, batch, key, hparams, extra, step):
        ce, variables, acc = batch_ce(apply_fn, variables, batch["retain"], key)
        scale = 1.0
        if decay == "linear":
            scale = jnp.maximum(
                0.0, 1.0 - step.astype(jnp.float32) / extra["decay_steps"]
            )
        elif decay == "linear_epoch":
            epoch = (step // extra["steps_per_epoch"]).astype(jnp.float32)
            scale = jnp.maximum(0.0, 1.0 - epoch / extra["epochs"])
        reg = _l1(variables["params"])
        loss = ce + hparams["alpha"] * scale * reg
        metrics = {
            "retain_ce": ce,
            "retain_acc": acc,
            "l1": reg,
            "l1_scale": jnp.asarray(scale, jnp.float32),
        }
        return loss, (variables, metrics)

    def init_hook(state, *, num_steps=None, steps_per_epoch=None, **context):
        if decay == "constant":
            return state
        if decay == "linear_epoch":
            if num_steps is None or steps_per_epoch is None:
                raise ValueError(
                    "l1_sparse decay='linear_epoch' needs num_steps= and "
                    "steps_per_epoch= at init (train.unlearn passes both)."
                )
            per = max(int(steps_per_epoch), 1)
            extra = {
                **state.extra,
                "steps_per_epoch": jnp.asarray(per, jnp.int32),
                "epochs": jnp.asarray(max(int(num_steps) // per, 1), jnp.float32),
            }
            return dataclasses.replace(state, extra=extra)
        steps = decay_steps if decay_steps is not None else num_steps
        if steps is None:
            raise ValueError(
                "l1_sparse decays its weight linearly over the run: pass "
                "num_steps= to init (train.unlearn does) or decay_steps= to the "
                "factory, or use decay='constant'."
            )
        extra = {
            **state.extra,
            "decay_steps": jnp.asarray(max(int(steps), 1), jnp.float32),
        }
        return dataclasses.replace(state, extra=extra)

    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    return gradient_method(
        loss_fn,
        tx,
        learning_rate=lr,
        hparams={"alpha": alpha},
        init_hook=init_hook,
    )


def saliency_mask(
    apply_fn: ApplyFn,
    variables,
    forget_set: Mapping[str, np.ndarray],
    *,
    threshold: float = 0.5,
    batch_size: int = 256,
):
    """SalUn's weight saliency mask: the top ``threshold`` fraction of weights by
    ``|grad of the forget cross-entropy|`` (computed over the whole forget set,
    eval mode) get 1, the rest 0. One global threshold over all parameters."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
    images = np.asarray(forget_set["image"], np.float32)
    labels = np.asarray(forget_set["label"], np.int32)
    if len(labels) == 0:
        raise ValueError("forget_set is empty.")

    @jax.jit
    def grad_sum(params, x, y):
        def loss(p):
            logits, _ = apply_fn({**variables, "params": p}, x, train=False)
            return jnp.sum(losses.cross_entropy(logits, y))

        return jax.grad(loss)(params)

    total = jax.tree.map(jnp.zeros_like, variables["params"])
    for i in range(0, len(labels), batch_size):
        g = grad_sum(
            variables["params"], images[i : i + batch_size], labels[i : i + batch_size]
        )
        total = jax.tree.map(jnp.add, total, g)
    flat = jnp.concatenate([jnp.abs(g).ravel() for g in jax.tree.leaves(total)])
    k = max(1, int(round(threshold * flat.size)))
    cut = jnp.sort(flat)[flat.size - k]
    return jax.tree.map(lambda g: (jnp.abs(g) >= cut).astype(jnp.float32), total)


@register("salun")
def salun(
    apply_fn: ApplyFn,
    *,
    num_classes: int | None = None,
    forget_set: Mapping[str, np.ndarray] | None = None,
    threshold: float = 0.5,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    retain_weight: float = 1.0,
    labels: str = "per_step",
    label_seed: int = 0,
    decay_non_salient: bool = False,
) -> Method:
    """SalUn: random-label unlearning restricted to salient weights.

    At ``init`` the saliency mask (:func:`saliency_mask` on ``forget_set``) is
    computed from the incoming (original) model and stored in ``state.extra``;
    every step then applies the random-label loss (forget relabelled at random
    plus retain CE; ``labels`` as in ``random_label``: fresh wrong labels per
    step by default, or one label per example for the run with
    ``labels="per_example"``, labels over all classes as the reference codes
    draw them) and the mask is the
    method's update-mask hook: gradients and updates (weight decay included)
    are multiplied by it, so non-salient weights never move (the paper's
    ``theta_u = m * (theta_o + delta) + (1 - m) * theta_o``).
    ``decay_non_salient=True`` masks the gradients only, as the reference code
    does with PyTorch's coupled weight decay: non-salient weights then shrink.

    References:
      Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based
      Weight Saliency" (ICLR 2024); threshold 0.5 is their default.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"salun needs num_classes >= 2, got {num_classes!r}.")
    if forget_set is None:
        raise ValueError("salun needs forget_set= (the forget images and labels).")
    check_hparam("retain_weight", retain_weight)
    loss_fn = random_label_loss(apply_fn, num_classes, labels)
    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    return gradient_method(
        loss_fn,
        tx,
        learning_rate=lr,
        hparams={"retain_weight": retain_weight},
        update_mask=lambda state: state.extra["mask"],
        mask_updates=not decay_non_salient,
        make_extra=lambda v: {
            "mask": saliency_mask(apply_fn, v, forget_set, threshold=threshold),
            **label_key_extra(labels, label_seed),
        },
    )


@register("boundary_shrink")
def boundary_shrink(
    apply_fn: ApplyFn,
    *,
    epsilon: float = 0.1,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Method:
    """Boundary Shrink (BU): relabel forget samples to their nearest wrong class.

    For each forget batch, an FGSM step of size ``epsilon`` on the FROZEN
    original model (``state.extra["teacher"]``) finds the nearest-but-incorrect
    class, ``y_nbi = argmax f_orig(x + eps * sign(grad_x CE))`` (the true class
    excluded); the model is fine-tuned with cross-entropy towards ``y_nbi`` on
    the clean inputs. An epoch is one pass over the forget set.

    References:
      Chen et al., "Boundary Unlearning" (CVPR 2023).
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")

    def loss_fn(variables, batch, key, hparams, extra, step):
        part = batch["forget"]
        teacher = extra["teacher"]

        def adv_loss(x):
            logits, _ = apply_fn(teacher, x, train=False)
            return jnp.sum(losses.cross_entropy(logits, part["label"]))

        x_adv = part["image"] + epsilon * jnp.sign(jax.grad(adv_loss)(part["image"]))
        adv_logits, _ = apply_fn(teacher, jax.lax.stop_gradient(x_adv), train=False)
        num_classes = adv_logits.shape[-1]
        not_true = jax.nn.one_hot(part["label"], num_classes) == 0
        y_nbi = jnp.argmax(jnp.where(not_true, adv_logits, -jnp.inf), axis=-1)
        ce, variables, acc = batch_ce(apply_fn, variables, part, key, labels=y_nbi)
        return ce, (variables, {"nbi_ce": ce, "forget_acc": acc})

    tx, lr = sgd_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    return gradient_method(
        loss_fn,
        tx,
        learning_rate=lr,
        driver="forget",
        make_extra=lambda v: {"teacher": v},
    )
