"""Kodge et al.'s gradient-free class unlearning by SVD projections ("SVD").

For every Dense and Conv layer, the input activations of a small retain sample
and of a forget sample are collected; from each activation matrix's SVD a
scaled projection ``M = U diag(alpha r / ((alpha - 1) r + 1)) U^T`` is formed
(``r_i = S_i^2 / sum S^2``), and the layer's weights are projected on their
input side with ``P = I - (M_f - M_f M_r)``: directions used by the forget class
but not by the retained ones are removed. Layers are projected on both sides
(input patches and outputs), the classifier on its input side only. No gradient step is
taken; the
method's ``init`` does all the work and ``step`` leaves the state unchanged.

References:
  Kodge, Saha, Roy, "Deep Unlearning: Fast and Efficient Gradient-free Class
  Forgetting" (TMLR 2024); defaults alpha_r 100, alpha_f 3 (CIFAR-10) from
  ``sangamesh-kodge/class_forgetting``.
"""

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods._base import Method, UnlearnState, register
from jaxunlearn.types import ApplyFn


def _rows(x: jax.Array, max_rows: int, seed: int) -> jax.Array:
    """``x`` as ``[rows, d]``, at most ``max_rows`` rows (a seeded subsample
    whose indices depend only on the shape, so it traces and vmaps)."""
    feats = jnp.reshape(x, (-1, x.shape[-1]))
    if feats.shape[0] > max_rows:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(feats.shape[0], max_rows, replace=False))
        feats = feats[keep]
    return feats


def _layer_activations(apply_fn, variables, images, max_rows: int, seed: int):
    """``{path: (module, inputs [rows, fan_in], outputs [rows, fan_out])}`` of
    every Dense / Conv layer, in call order. Conv inputs are unfolded patches;
    outputs are the layer's (pre-normalisation) outputs, one row per position."""
    found = {}

    def record(next_fun, args, kwargs, context):
        mod = context.module
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(mod, nn.Dense | nn.Conv):
            found[mod.path] = (mod, args[0], out)
        return out

    with nn.intercept_methods(record):
        apply_fn(variables, jnp.asarray(images), train=False)
    acts = {}
    for i, (path, (mod, x, y)) in enumerate(found.items()):
        if isinstance(mod, nn.Conv):
            ks = tuple(mod.kernel_size)
            strides = mod.strides or 1
            if isinstance(strides, int):
                strides = (strides,) * len(ks)
            padding = mod.padding
            if isinstance(padding, int):
                padding = [(padding, padding)] * len(ks)
            x = jax.lax.conv_general_dilated_patches(
                x,
                ks,
                tuple(strides),
                padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        acts[path] = (
            mod,
            _rows(x, max_rows, seed + 2 * i),
            _rows(y, max_rows, seed + 2 * i + 1),
        )
    return acts


def scaled_projection(features: np.ndarray, alpha: float) -> np.ndarray:
    """``U diag(alpha r / ((alpha - 1) r + 1)) U^T`` of a ``[rows, d]`` matrix.

    ``U`` are the left singular vectors of ``features^T`` (directions in input
    space), ``r_i = S_i^2 / sum_j S_j^2`` their energy fractions. Float64
    numpy; the method itself uses the traceable :func:`_projection`.
    """
    u, s, _ = np.linalg.svd(features.T, full_matrices=False)
    r = s**2 / max(float(np.sum(s**2)), 1e-30)
    scale = alpha * r / ((alpha - 1.0) * r + 1.0)
    return (u * scale) @ u.T


def _projection(features: jax.Array, alpha) -> jax.Array:
    """:func:`scaled_projection` in jnp (eigenvectors of the Gram matrix:
    the same U and S^2), so ``svd`` traces under ``jax.vmap``."""
    gram = features.T @ features
    s2, u = jnp.linalg.eigh(gram)
    s2 = jnp.maximum(s2, 0.0)
    r = s2 / jnp.maximum(jnp.sum(s2), 1e-30)
    scale = alpha * r / ((alpha - 1.0) * r + 1.0)
    return (u * scale) @ u.T


def _update(feats_r, feats_f, alpha_r, alpha_f):
    m_r = _projection(feats_r, alpha_r)
    m_f = _projection(feats_f, alpha_f)
    return jnp.eye(m_r.shape[0], dtype=m_r.dtype) - (m_f - m_f @ m_r)


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
    output_side: bool = True,
):
    """Projects every Dense / Conv kernel; returns new variables (traceable).

    Every layer but the last Dense (the classifier) is projected on both
    sides, ``W <- P_post^T W P_pre^T`` in PyTorch's ``[out, in]`` layout
    (``kernel <- P_pre @ kernel @ P_post`` in Flax's ``[in, out]``), with
    ``P_pre`` from the layer's input activations (conv patches) and ``P_post``
    from its outputs; a bias becomes ``b @ P_post``. The classifier is
    projected on its input side only. This is the first release of Kodge
    et al.'s code; its later versions project the input side of every layer
    only (``output_side=False``, which also projects the classifier's input
    side and leaves biases alone).

    Args:
      apply_fn: ``models.make_apply_fn(model)``.
      variables: the original model's variables.
      retain_images: a small retain sample (Kodge: about 100 per class).
      forget_images: a forget sample.
      alpha_r, alpha_f: scaling of the retain / forget projections.
      max_rows: cap on activation rows (conv positions) per layer, seeded.
      seed: seed of that subsample.
      output_side: False gives the weaker input-side-only variant.
    """
    if len(retain_images) == 0 or len(forget_images) == 0:
        raise ValueError("svd needs non-empty retain and forget samples.")
    acts_r = _layer_activations(apply_fn, variables, retain_images, max_rows, seed)
    acts_f = _layer_activations(
        apply_fn, variables, forget_images, max_rows, seed + 7919
    )
    params = variables["params"]
    last = list(acts_r)[-1]
    for path, (mod, in_r, out_r) in acts_r.items():
        _, in_f, out_f = acts_f[path]
        p_pre = _update(in_r, in_f, alpha_r, alpha_f)
        layer = params
        for name in path:
            layer = layer[name]
        kernel = layer["kernel"]
        both = output_side and path != last
        p_post = _update(out_r, out_f, alpha_r, alpha_f) if both else None
        if isinstance(mod, nn.Conv):  # [kh, kw, cin, cout] -> (cin, kh, kw) rows
            kh, kw, cin, cout = kernel.shape
            flat = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, cout)
            flat = p_pre @ flat
            if p_post is not None:
                flat = flat @ p_post
            new = flat.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)
        else:
            new = p_pre @ kernel
            if p_post is not None:
                new = new @ p_post
        params = _set(params, (*path, "kernel"), new.astype(kernel.dtype))
        if p_post is not None and "bias" in layer:
            bias = layer["bias"]
            params = _set(params, (*path, "bias"), (bias @ p_post).astype(bias.dtype))
    return {**variables, "params": params}


@register("svd")
def svd(
    apply_fn: ApplyFn,
    *,
    forget_set: Mapping[str, np.ndarray] | None = None,
    retain_set: Mapping[str, np.ndarray] | None = None,
    retain_per_class: int = 100,
    forget_samples: int | None = None,
    alpha_r: float = 100.0,
    alpha_f: float = 3.0,
    max_rows: int = 10_000,
    seed: int = 0,
    output_side: bool = True,
) -> Method:
    """Kodge et al.'s SVD class unlearning as a ``Method`` (one-shot).

    ``init`` samples ``retain_per_class`` examples of each retained class
    (about 900 with nine retained classes, as the reference code) and
    ``forget_samples`` forget examples (default: all of them up to the size
    of the retain sample), seeded; computes the projections of
    :func:`svd_unlearn` (both sides, the classifier input side only) and
    returns the projected model; ``step`` is the identity (run it for 0 or 1
    epochs). ``init`` is traceable, so ``jax.vmap(method.init)`` projects K
    models at once (``train.unlearn_replicas``). Use ``alpha_r=1000,
    alpha_f=30`` for CIFAR-100 (Kodge et al.).
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
    if forget_samples is None:
        forget_samples = len(retain_images)
    if forget_samples < 1:
        raise ValueError(f"`forget_samples` must be >= 1, got {forget_samples!r}.")
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
            output_side=output_side,
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
