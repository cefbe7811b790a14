"""Baselines of the RWFT tables: l1-sparse, SalUn and Boundary Shrink (BU).

Defaults follow the papers' public code as summarised in METHODS.md 2.6 / 4.6
(Unlearn-Sparse / Unlearn-Saliency); drivers set learning rates and epochs.
"""

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import losses
from jaxunlearn.methods._base import Method, default_tx, gradient_method, register
from jaxunlearn.methods._baselines import random_label_loss
from jaxunlearn.methods._common import batch_ce
from jaxunlearn.types import ApplyFn


def _l1(params) -> jax.Array:
    return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


@register("l1_sparse")
def l1_sparse(
    apply_fn: ApplyFn,
    *,
    alpha: float = 1e-4,
    decay_steps: int | None = None,
    tx: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Method:
    """l1-sparse unlearning: retain cross-entropy plus ``alpha_t * ||theta||_1``.

    ``alpha_t = alpha * max(0, 1 - t / decay_steps)`` (a linear decay to 0, as
    Jia et al.'s schedule; constant when ``decay_steps`` is None). ``alpha`` is
    ``state.hparams["alpha"]`` and can be swept with vmap.

    References:
      Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS
      2023); R18 defaults alpha 1e-4, lr 1e-2 (METHODS.md 4.6).
    """
    if decay_steps is not None and decay_steps < 1:
        raise ValueError(f"decay_steps must be >= 1, got {decay_steps!r}.")

    def loss_fn(variables, batch, key, hparams, extra):
        ce, variables, acc = batch_ce(apply_fn, variables, batch["retain"], key)
        scale = 1.0
        if decay_steps is not None:
            scale = jnp.maximum(0.0, 1.0 - extra["t"] / decay_steps)
        reg = _l1(variables["params"])
        loss = ce + hparams["alpha"] * scale * reg
        return loss, (variables, {"retain_ce": ce, "retain_acc": acc, "l1": reg})

    base = gradient_method(
        loss_fn,
        default_tx(
            tx,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
        ),
        hparams={"alpha": alpha},
        make_extra=lambda v: {"t": jnp.zeros((), jnp.float32)},
    )

    def step(state, batch, key):
        state, metrics = base.step(state, batch, key)
        # extra["t"] mirrors state.step as a float for the decay schedule
        extra = {"t": state.step.astype(jnp.float32)}
        return dataclasses.replace(state, extra=extra), metrics

    return Method(base.init, step, base.driver)


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
) -> Method:
    """SalUn: random-label unlearning restricted to salient weights.

    At ``init`` the saliency mask (:func:`saliency_mask` on ``forget_set``) is
    computed from the incoming (original) model and stored in ``state.extra``;
    every step then applies the random-label loss (forget relabelled to random
    wrong classes plus retain CE) with the gradient multiplied by the mask, so
    non-salient weights never move.

    References:
      Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based
      Weight Saliency" (ICLR 2024); threshold 0.5 is their default.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"salun needs num_classes >= 2, got {num_classes!r}.")
    if forget_set is None:
        raise ValueError("salun needs forget_set= (the forget images and labels).")

    loss_fn = random_label_loss(apply_fn, num_classes)

    inner = default_tx(
        tx, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    base = gradient_method(
        loss_fn,
        optax.identity(),  # placeholder: the masked update is applied below
        hparams={"retain_weight": retain_weight},
        make_extra=lambda v: {
            "mask": saliency_mask(apply_fn, v, forget_set, threshold=threshold)
        },
    )

    def init(variables, **kw):
        state = base.init(variables, **kw)
        return dataclasses.replace(
            state, opt_state=inner.init(state.variables["params"])
        )

    def step(state, batch, key):
        key = jax.random.fold_in(key, state.step)
        params = state.variables["params"]

        def objective(p):
            return loss_fn(
                {**state.variables, "params": p}, batch, key, state.hparams, state.extra
            )

        (loss, (new_vars, metrics)), grads = jax.value_and_grad(
            objective, has_aux=True
        )(params)
        grads = jax.tree.map(jnp.multiply, grads, state.extra["mask"])
        updates, opt_state = inner.update(grads, state.opt_state, params)
        # weight decay must not move masked weights either
        updates = jax.tree.map(jnp.multiply, updates, state.extra["mask"])
        params = optax.apply_updates(params, updates)
        new_state = dataclasses.replace(
            state,
            step=state.step + 1,
            variables={**new_vars, "params": params},
            opt_state=opt_state,
        )
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}

    return Method(init, step, base.driver)


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

    def loss_fn(variables, batch, key, hparams, extra):
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

    return gradient_method(
        loss_fn,
        default_tx(
            tx,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
        ),
        driver="forget",
        make_extra=lambda v: {"teacher": v},
    )
