"""Kodge et al.'s gradient-free class unlearning by SVD projections ("SVD").

For every Dense and Conv layer, the input activations of a small retain sample
and of a forget sample are collected; from each activation matrix's SVD a
scaled projection ``M = U diag(alpha r / ((alpha - 1) r + 1)) U^T`` is formed
(``r_i = S_i^2 / sum S^2``), and the layer's weights are projected on their
input side with ``P = I - (M_f - M_f M_r)``: directions used by the forget class
but not by the retained ones are removed. No gradient step is taken; the
method's ``init`` does all the work and ``step`` leaves the state unchanged.

References:
  Kodge, Saha, Roy, "Deep Unlearning: Fast and Efficient Gradient-free Class
  Forgetting" (TMLR 2024); defaults alpha_r 100, alpha_f 3 (CIFAR-10) from
  ``sangamesh-kodge/class_forgetting`` as summarised in METHODS.md 2.6.
"""

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods._base import Method, UnlearnState, register
from jaxunlearn.types import ApplyFn


def _layer_inputs(apply_fn, variables, images, max_rows: int, rng) -> dict:
    """Input feature matrices ``[rows, fan_in]`` of every Dense / Conv layer."""
    found = {}

    def record(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, nn.Dense | nn.Conv):
            found[mod.path] = (mod, args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        apply_fn(variables, jnp.asarray(images), train=False)
    out = {}
    for path, (mod, x) in found.items():
        if isinstance(mod, nn.Conv):
            ks = tuple(mod.kernel_size)
            strides = mod.strides or 1
            if isinstance(strides, int):
                strides = (strides,) * len(ks)
            padding = mod.padding
            if isinstance(padding, int):
                padding = [(padding, padding)] * len(ks)
            patches = jax.lax.conv_general_dilated_patches(
                x,
                ks,
                tuple(strides),
                padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            feats = np.asarray(patches).reshape(-1, patches.shape[-1])
        else:
            feats = np.asarray(x).reshape(-1, x.shape[-1])
        if len(feats) > max_rows:
            feats = feats[np.sort(rng.choice(len(feats), max_rows, replace=False))]
        out[path] = (mod, feats.astype(np.float64))
    return out


def scaled_projection(features: np.ndarray, alpha: float) -> np.ndarray:
    """``U diag(alpha r / ((alpha - 1) r + 1)) U^T`` of a ``[rows, d]`` matrix.

    ``U`` are the left singular vectors of ``features^T`` (directions in input
    space), ``r_i = S_i^2 / sum_j S_j^2`` their energy fractions.
    """
    u, s, _ = np.linalg.svd(features.T, full_matrices=False)
    r = s**2 / max(float(np.sum(s**2)), 1e-30)
    scale = alpha * r / ((alpha - 1.0) * r + 1.0)
    return (u * scale) @ u.T


def _set(tree, path, value):
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def svd_unlearn(
    apply_fn: ApplyFn,
    variables,
    retain_images: np.ndarray,
    forget_images: np.ndarray,
    *,
    alpha_r: float = 100.0,
    alpha_f: float = 3.0,
    max_rows: int = 10_000,
    seed: int = 0,
):
    """Projects every Dense / Conv kernel; returns new variables (pure numpy math).

    Args:
      apply_fn: ``models.make_apply_fn(model)``.
      variables: the original model's variables.
      retain_images: a small retain sample (Kodge: about 100 per class).
      forget_images: a forget sample.
      alpha_r, alpha_f: scaling of the retain / forget projections.
      max_rows: cap on activation rows (conv patches) per layer, seeded sample.
      seed: seed of that subsample.
    """
    if len(retain_images) == 0 or len(forget_images) == 0:
        raise ValueError("svd needs non-empty retain and forget samples.")
    rng = np.random.default_rng(seed)
    acts_r = _layer_inputs(apply_fn, variables, retain_images, max_rows, rng)
    acts_f = _layer_inputs(apply_fn, variables, forget_images, max_rows, rng)
    params = jax.tree.map(np.asarray, variables["params"])
    for path, (mod, feats_r) in acts_r.items():
        feats_f = acts_f[path][1]
        m_r = scaled_projection(feats_r, alpha_r)
        m_f = scaled_projection(feats_f, alpha_f)
        proj = np.eye(len(m_r)) - (m_f - m_f @ m_r)
        layer = params
        for name in path:
            layer = layer[name]
        kernel = layer["kernel"]
        if isinstance(mod, nn.Conv):  # [kh, kw, cin, cout] -> (cin, kh, kw) rows
            kh, kw, cin, cout = kernel.shape
            flat = np.transpose(kernel, (2, 0, 1, 3)).reshape(-1, cout)
            new = (proj @ flat).reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)
        else:
            new = proj @ kernel
        params = _set(params, (*path, "kernel"), new.astype(kernel.dtype))
    return {**variables, "params": jax.tree.map(jnp.asarray, params)}


@register("svd")
def svd(
    apply_fn: ApplyFn,
    *,
    forget_set: Mapping[str, np.ndarray] | None = None,
    retain_set: Mapping[str, np.ndarray] | None = None,
    retain_per_class: int = 100,
    forget_samples: int = 100,
    alpha_r: float = 100.0,
    alpha_f: float = 3.0,
    max_rows: int = 10_000,
    seed: int = 0,
) -> Method:
    """Kodge et al.'s SVD class unlearning as a ``Method`` (one-shot).

    ``init`` samples ``retain_per_class`` examples of each retained class and
    ``forget_samples`` forget examples (seeded), computes the projections and
    returns the projected model; ``step`` is the identity (run it for 0 or 1
    epochs). Use ``alpha_r=1000, alpha_f=30`` for CIFAR-100 (METHODS.md 2.6).
    """
    if forget_set is None or retain_set is None:
        raise ValueError("svd needs forget_set= and retain_set=.")
    rng = np.random.default_rng(seed)
    labels = np.asarray(retain_set["label"])
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, min(retain_per_class, len(idx)), replace=False))
    retain_images = np.asarray(retain_set["image"])[np.sort(np.concatenate(picks))]
    n_f = len(forget_set["label"])
    f_idx = np.sort(rng.choice(n_f, min(forget_samples, n_f), replace=False))
    forget_images = np.asarray(forget_set["image"])[f_idx]

    def init(variables, *, key=None, hparams=None, **context):
        del key, context
        if hparams:
            raise ValueError(f"svd has no hparams, got {sorted(hparams)}.")
        new = svd_unlearn(
            apply_fn,
            variables,
            retain_images,
            forget_images,
            alpha_r=alpha_r,
            alpha_f=alpha_f,
            max_rows=max_rows,
            seed=seed,
        )
        return UnlearnState(
            step=jnp.zeros((), jnp.int32),
            variables=dict(new),
            opt_state=(),
            hparams={},
            extra={},
        )

    def step(state, batch, key):
        del batch, key  # the model was projected in init; only count steps
        return dataclasses.replace(state, step=state.step + 1), {
            "loss": jnp.zeros((), jnp.float32)
        }

    return Method(init, step, "retain")
