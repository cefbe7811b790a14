"""Blend condensation: one learned convex-ish blend of images per free cluster.

Every free cluster ``c`` with members ``x_c1 .. x_cn`` gets raw weights
``w_c`` (initialised to ``1/n``) and the blended image
``x~_c = sum_i (w_ci / sum_j w_cj) x_ci`` (divide-by-sum, not softmax; the
weights are never clipped). The weights minimise the distribution-matching
loss ``L_c = mean_d (f(x~_c) - mean_i f(x_ci))_d^2`` of a random ConvNet-3
``f``, averaged over the clusters, with SGD (momentum 0.5): one step per
iteration over all clusters jointly.

Two extractor regimes:

* ``"random"`` (the paper's expectation over extractors): a fresh ConvNet-3
  every iteration, drawn from ``fold_in(key, step)``, with the target mean
  features recomputed under it;
* ``"fixed"`` (the reference code): one random ConvNet-3 for the whole run,
  targets computed once.

Layout: the free clusters' images are stored once as a compact ``pool``
``[P, H, W, C]`` (cluster after cluster); ``index`` ``[n_clusters, m]`` and
``mask`` point into it (padded slots masked) and ``segment`` ``[P]`` names
each pool image's cluster. A masked slot has zero weight and gets no
gradient, and its image is replaced by zeros before use, so garbage there
changes nothing. The pure pieces (:func:`blend_init`, :func:`blend_images`,
:func:`cluster_loss`, :func:`mean_features`, :func:`blend_step`) run under
``jax.jit`` / ``jax.vmap``; :func:`blend` jits them and runs the loop, either
all clusters in one vmapped program per iteration (``vectorize=True``) or
cluster by cluster with the same per-cluster functions (``vectorize=False``,
as the reference code does).

References:
  Blend paper, Section 3.2 (Eqs. 2-3) and the reference implementation
  ``dc_methods/dc_blend_v2.py`` of ``algebraicdianuj/DC_Unlearning``.
"""

import numbers
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxunlearn.condense import _features
from jaxunlearn.types import ApplyFn, Variables

EXTRACTORS = ("random", "fixed")


class BlendState(NamedTuple):
    """Optimisation state of Blend (a pytree).

    Attributes:
      weights: ``[n_clusters, m]`` raw blend weights (0 on padded slots).
      momentum: ``[n_clusters, m]`` SGD momentum buffer.
      step: int32 scalar, iterations done.
    """

    weights: jax.Array
    momentum: jax.Array
    step: jax.Array


def blend_learning_rate(ipc: float) -> float:
    """The reference code's cubic learning rate ``lr_b(IPC)`` for Blend.

    ``lr_b = -2.397e-6 IPC^3 + 0.01265 IPC^2 - 0.2558 IPC + 1.461``, fitted
    by the authors; large at large IPC to make up for the tiny per-weight
    gradients of the sum-normalised blend. Keep it with the sum
    normalisation (it is not tuned for softmax weights).

    Examples:
      >>> from jaxunlearn import condense
      >>> round(condense.blend_learning_rate(2), 3)
      1.0
      >>> round(condense.blend_learning_rate(10), 3)
      0.166
    """
    if isinstance(ipc, bool) or not isinstance(ipc, numbers.Real) or ipc < 1:
        raise ValueError(f"`ipc` must be a number >= 1, got {ipc!r}.")
    return float(-2.397e-6 * ipc**3 + 0.01265 * ipc**2 - 0.2558 * ipc + 1.461)


def blend_init(mask: ArrayLike) -> BlendState:
    """Weights ``1/n_c`` on the ``n_c`` real slots of every cluster, 0 elsewhere.

    Args:
      mask: bool ``[n_clusters, m]``.
    """
    mask = jnp.asarray(mask)
    if mask.ndim != 2 or mask.dtype != jnp.bool_:
        raise ValueError(
            f"`mask` must be a boolean [n_clusters, m] array, got {mask.dtype} "
            f"{mask.shape}."
        )
    counts = jnp.sum(mask, axis=1, keepdims=True)
    weights = jnp.where(mask, 1.0 / jnp.maximum(counts, 1), 0.0).astype(jnp.float32)
    return BlendState(weights, jnp.zeros_like(weights), jnp.zeros((), jnp.int32))


def _expand(mask: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim))


def blend_image(w: jax.Array, x: jax.Array, mask: jax.Array) -> jax.Array:
    """One cluster's blend ``sum_i (w_i / sum_j w_j) x_i`` over real slots.

    Args:
      w: ``[m]`` raw weights.
      x: ``[m, H, W, C]`` member images (anything, even NaN, on masked slots).
      mask: bool ``[m]``.

    Returns:
      ``[H, W, C]``.
    """
    w = jnp.where(mask, w, 0.0)
    x = jnp.where(_expand(mask, x), x, 0.0)
    return jnp.tensordot(w / jnp.sum(w), x, axes=1)


def blend_images(weights: jax.Array, x: jax.Array, mask: jax.Array) -> jax.Array:
    """:func:`blend_image` of every cluster: ``[n, H, W, C]`` from ``[n, m]`` weights.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxunlearn import condense
      >>> x = jnp.arange(4.0).reshape(1, 2, 1, 2, 1)   # one cluster, 2 images
      >>> w = jnp.array([[3.0, 1.0]])
      >>> condense.blend_images(w, x, jnp.ones((1, 2), bool))[0, 0, :, 0]
      Array([0.5, 1.5], dtype=float32)
    """
    return jax.vmap(blend_image)(weights, x, mask)


def mean_features(
    variables: Variables,
    images: jax.Array,
    segment: jax.Array,
    num_segments: int,
    *,
    apply_fn: ApplyFn,
    batch_size: int | None = None,
) -> jax.Array:
    """Mean extractor features of every segment (cluster or class).

    Args:
      variables: extractor variables.
      images: ``[P, H, W, C]``.
      segment: int ``[P]`` segment of each image; ids outside
        ``[0, num_segments)`` are ignored (padding).
      num_segments: number of segments (static).
      apply_fn: from :func:`extractor_apply_fn`.
      batch_size: ``None`` runs all images as one batch; an int runs them in
        chunks under ``lax.map`` to bound memory (slow on XLA:CPU, which runs
        convolutions inside loops many times slower).

    Returns:
      ``[num_segments, D]``; an empty segment gets zeros.
    """
    valid = (segment >= 0) & (segment < num_segments)
    images = jnp.where(_expand(valid, images), images, 0.0)
    if batch_size is None or batch_size >= images.shape[0]:
        feats = _features.embed(variables, images, apply_fn=apply_fn)
    else:
        p = images.shape[0]
        nb = -(-p // batch_size)
        pad = nb * batch_size - p
        padded = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]))])
        chunks = padded.reshape(nb, batch_size, *images.shape[1:])
        feats = jax.lax.map(
            lambda b: _features.embed(variables, b, apply_fn=apply_fn), chunks
        )
        feats = feats.reshape(nb * batch_size, -1)[:p]
    seg = jnp.where(valid, segment, num_segments)
    sums = jax.ops.segment_sum(feats, seg, num_segments + 1)[:num_segments]
    counts = jax.ops.segment_sum(valid.astype(feats.dtype), seg, num_segments + 1)
    return sums / jnp.maximum(counts[:num_segments], 1.0)[:, None]


def cluster_loss(
    w: jax.Array,
    x: jax.Array,
    mask: jax.Array,
    target: jax.Array,
    variables: Variables,
    *,
    apply_fn: ApplyFn,
) -> jax.Array:
    """``mean_d (f(x~) - target)_d^2`` of one cluster's blend ``x~``.

    Args:
      w: ``[m]`` raw weights; x: ``[m, H, W, C]``; mask: bool ``[m]``;
      target: ``[D]`` mean features of the cluster's images;
      variables: extractor variables; apply_fn: the extractor.
    """
    synth = blend_image(w, x, mask)[None]
    feat = _features.embed(variables, synth, apply_fn=apply_fn)[0]
    return jnp.mean((feat - jax.lax.stop_gradient(target)) ** 2)


def blend_loss(
    weights: jax.Array,
    x: jax.Array,
    mask: jax.Array,
    targets: jax.Array,
    variables: Variables,
    *,
    apply_fn: ApplyFn,
) -> jax.Array:
    """Mean of :func:`cluster_loss` over the clusters (vmapped)."""
    per = jax.vmap(
        lambda w, xc, mc, t: cluster_loss(w, xc, mc, t, variables, apply_fn=apply_fn)
    )(weights, x, mask, targets)
    return jnp.mean(per)


def _sgd(state: BlendState, grads, learning_rate, momentum) -> BlendState:
    """PyTorch SGD with momentum: ``b = mu b + g``, ``w -= lr b``."""
    buf = momentum * state.momentum + grads
    return BlendState(state.weights - learning_rate * buf, buf, state.step + 1)


def extractor_for_step(
    apply_fn: ApplyFn, key: jax.Array, step: jax.Array, image_shape
) -> Variables:
    """The extractor of iteration ``step`` in the ``"random"`` regime."""
    return _features.sample_extractor(
        apply_fn, jax.random.fold_in(key, step), image_shape
    )


def blend_step(
    state: BlendState,
    pool: jax.Array,
    index: jax.Array,
    mask: jax.Array,
    segment: jax.Array,
    *,
    apply_fn: ApplyFn,
    learning_rate: ArrayLike,
    momentum: ArrayLike = 0.5,
    key: jax.Array | None = None,
    variables: Variables | None = None,
    targets: jax.Array | None = None,
    batch_size: int | None = None,
) -> tuple[BlendState, jax.Array]:
    """One Blend iteration over all clusters (pure; jit it).

    Args:
      state: from :func:`blend_init`.
      pool: ``[P, H, W, C]`` images of the free clusters.
      index: int ``[n_clusters, m]`` pool index of every slot.
      mask: bool ``[n_clusters, m]`` real slots.
      segment: int ``[P]`` cluster of each pool image (used for targets).
      apply_fn: the extractor (:func:`extractor_apply_fn`).
      learning_rate: SGD learning rate (an array is fine: no recompiles).
      momentum: SGD momentum.
      key: ``"random"`` regime: the extractor is drawn from
        ``fold_in(key, state.step)`` and the targets recomputed under it.
      variables: ``"fixed"`` regime: the extractor (``key`` unused).
      targets: ``"fixed"`` regime: precomputed ``[n_clusters, D]`` targets
        (computed here when omitted).
      batch_size: feature batch for the targets (see :func:`mean_features`).

    Returns:
      ``(new_state, loss)``, the loss at the weights before the update.
    """
    n = index.shape[0]
    if variables is None:
        if key is None:
            raise ValueError("`blend_step` needs `key` or `variables`.")
        variables = extractor_for_step(apply_fn, key, state.step, pool.shape[1:])
        targets = None
    if targets is None:
        targets = mean_features(
            variables, pool, segment, n, apply_fn=apply_fn, batch_size=batch_size
        )
    x = pool[index]
    loss, grads = jax.value_and_grad(blend_loss)(
        state.weights, x, mask, targets, variables, apply_fn=apply_fn
    )
    return _sgd(state, grads, learning_rate, momentum), loss


# --- compiled entry points used by `blend` ----------------------------------


def _step_random(state, key, pool, index, mask, segment, lr, mom, apply_fn, bs):
    return blend_step(
        state,
        pool,
        index,
        mask,
        segment,
        apply_fn=apply_fn,
        learning_rate=lr,
        momentum=mom,
        key=key,
        batch_size=bs,
    )


def _step_fixed(state, variables, targets, pool, index, mask, lr, mom, apply_fn):
    return blend_step(
        state,
        pool,
        index,
        mask,
        None,
        apply_fn=apply_fn,
        learning_rate=lr,
        momentum=mom,
        variables=variables,
        targets=targets,
    )


def _targets(variables, pool, segment, apply_fn, n, bs):
    return mean_features(variables, pool, segment, n, apply_fn=apply_fn, batch_size=bs)


def _sample(key, step, apply_fn, image_shape):
    return extractor_for_step(apply_fn, key, step, image_shape)


def _cluster_value_and_grad(w, x, mask, target, variables, apply_fn):
    return jax.value_and_grad(cluster_loss)(
        w, x, mask, target, variables, apply_fn=apply_fn
    )


_step_random_jit = jax.jit(_step_random, static_argnums=(8, 9))
_step_fixed_jit = jax.jit(_step_fixed, static_argnums=(8,))
_targets_jit = jax.jit(_targets, static_argnums=(3, 4, 5))
_sample_jit = jax.jit(_sample, static_argnums=(2, 3))
_cluster_vg_jit = jax.jit(_cluster_value_and_grad, static_argnums=(5,))
_sgd_jit = jax.jit(_sgd)
_blend_images_jit = jax.jit(lambda w, x, m: blend_images(w, x, m))


class _Timer:
    def __init__(self):
        self.compile_s = 0.0

    def compile(self, jitted, *args):
        t = time.perf_counter()
        out = jitted.lower(*args).compile()
        self.compile_s += time.perf_counter() - t
        return out


def compact_clusters(
    images: np.ndarray, index: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gathers the free clusters' images into one pool.

    Returns:
      ``(pool [P, H, W, C], local_index [n, m], segment [P])`` with
      ``local_index`` pointing into ``pool`` (0 on padded slots).
    """
    rows, cols = np.nonzero(mask)
    pool = images[index[rows, cols]]
    local = np.zeros(index.shape, np.int32)
    local[rows, cols] = np.arange(len(rows), dtype=np.int32)
    return pool, local, rows.astype(np.int32)


def _check_clusters(images, index, mask, labels):
    images = _features.check_image_batch("images", images)
    index = np.asarray(index)
    mask = np.asarray(mask)
    if index.ndim != 2:
        raise ValueError(
            f"`index` must have shape [n_clusters, max_size], got {index.shape}."
        )
    if not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"`index` must hold integers, got dtype {index.dtype}.")
    if mask.shape != index.shape or mask.dtype != np.bool_:
        raise ValueError(
            f"`mask` must be a boolean array of the shape of `index` {index.shape}, "
            f"got {mask.dtype} {mask.shape}."
        )
    if index.shape[0] == 0:
        raise ValueError("`index` has no cluster.")
    if not mask.any(axis=1).all():
        raise ValueError(
            f"every cluster needs at least one member; empty rows of `mask`: "
            f"{np.flatnonzero(~mask.any(axis=1)).tolist()}."
        )
    real = index[mask]
    if real.min() < 0 or real.max() >= len(images):
        raise ValueError(
            f"`index` must point into `images` (N = {len(images)}), got values in "
            f"[{real.min()}, {real.max()}]."
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(
            f"`labels` must have shape [N] = ({len(images)},), got {labels.shape}."
        )
    member_labels = np.where(mask, labels[np.where(mask, index, 0)], -1)
    first = member_labels[:, 0]
    if np.any(mask & (member_labels != first[:, None])):
        bad = np.flatnonzero(np.any(mask & (member_labels != first[:, None]), axis=1))
        raise ValueError(
            f"every cluster must hold one class; clusters {bad[:10].tolist()} mix "
            "labels."
        )
    return images, index.astype(np.int64), mask, first.astype(np.int32)


def blend(
    images: ArrayLike,
    index: ArrayLike,
    mask: ArrayLike,
    labels: ArrayLike,
    *,
    key: jax.Array,
    iterations: int = 12,
    learning_rate: float | None = None,
    ipc: int | None = None,
    momentum: float = 0.5,
    extractor: str = "random",
    width: int = 128,
    depth: int = 3,
    vectorize: bool = True,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Condenses every cluster into one blended image (runs the whole loop).

    Args:
      images: ``[N, H, W, C]`` training images (normalised as trained on).
      index: int ``[n_clusters, m]`` member indices into ``images``, e.g.
        ``partition(...).index``; padded slots may hold anything in range.
      mask: bool ``[n_clusters, m]`` real members.
      labels: int ``[N]``; all members of a cluster must share their label.
      key: PRNG key of the extractor(s).
      iterations: SGD steps (12 in the reference unlearning pipeline).
      learning_rate: SGD learning rate; ``None`` uses
        :func:`blend_learning_rate` of ``ipc``.
      ipc: clusters per class of the clustering (only for the default lr).
      momentum: SGD momentum.
      extractor: ``"random"`` (fresh ConvNet-3 each iteration, the paper) or
        ``"fixed"`` (one random ConvNet-3, targets precomputed; the code).
      width: extractor conv channels.
      depth: extractor conv blocks.
      vectorize: True: all clusters in one vmapped, jitted program per
        iteration. False: the reference code's cluster-by-cluster loop over
        the same per-cluster functions (gradients accumulated, one step per
        iteration); same result to float tolerance, much slower.
      batch_size: feature batch of the target computation (``None``: one
        batch; see :func:`mean_features`).

    Returns:
      ``(blended [n_clusters, H, W, C], labels int32 [n_clusters],
      diagnostics)`` with numpy arrays; diagnostics hold ``"loss"``
      (``[iterations]``, each before its update), ``"compile_s"``,
      ``"run_s"`` and ``"time_s"`` (everything, wall clock).

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import condense
      >>> x = np.random.default_rng(0).random((6, 8, 8, 1), np.float32)
      >>> index = np.array([[0, 1, 2], [3, 4, 0]])
      >>> mask = np.array([[True, True, True], [True, True, False]])
      >>> out, y, diag = condense.blend(x, index, mask, np.zeros(6, int),
      ...     key=jax.random.key(0), iterations=2, learning_rate=0.1, width=4)
      >>> out.shape, y.tolist(), diag["loss"].shape
      ((2, 8, 8, 1), [0, 0], (2,))
    """
    t_all = time.perf_counter()
    if extractor not in EXTRACTORS:
        raise ValueError(f"`extractor` must be one of {EXTRACTORS}, got {extractor!r}.")
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, numbers.Integral)
        or iterations < 0
    ):
        raise ValueError(f"`iterations` must be an int >= 0, got {iterations!r}.")
    if learning_rate is None:
        if ipc is None:
            raise ValueError(
                "pass `learning_rate`, or `ipc` for the default cubic "
                "`blend_learning_rate(ipc)`."
            )
        learning_rate = blend_learning_rate(ipc)
    images, index, mask, cluster_labels = _check_clusters(images, index, mask, labels)
    apply_fn = _features.extractor_apply_fn(width=width, depth=depth)
    pool_np, local_np, seg_np = compact_clusters(images, index, mask)
    pool, local = jnp.asarray(pool_np), jnp.asarray(local_np)
    seg, jmask = jnp.asarray(seg_np), jnp.asarray(mask)
    n = index.shape[0]
    shape = tuple(images.shape[1:])
    lr = jnp.asarray(learning_rate, jnp.float32)
    mom = jnp.asarray(momentum, jnp.float32)
    state = blend_init(jmask)
    timer = _Timer()
    runner = _run_vectorized if vectorize else _run_loop
    state, losses, run_s = runner(
        timer,
        state,
        key,
        pool,
        local,
        jmask,
        seg,
        lr,
        mom,
        apply_fn=apply_fn,
        n=n,
        shape=shape,
        iterations=int(iterations),
        extractor=extractor,
        batch_size=batch_size,
    )
    blended = np.asarray(_blend_images_jit(state.weights, pool[local], jmask))
    diag = {
        "loss": np.asarray(losses, np.float32),
        "compile_s": timer.compile_s,
        "run_s": run_s,
        "time_s": time.perf_counter() - t_all,
        "learning_rate": float(learning_rate),
        "extractor": extractor,
        "vectorize": bool(vectorize),
    }
    return blended, cluster_labels, diag


def _run_vectorized(
    timer, state, key, pool, local, mask, seg, lr, mom, *, apply_fn, n, shape,
    iterations, extractor, batch_size,
):  # fmt: skip
    losses = []
    if extractor == "random":
        args = (state, key, pool, local, mask, seg, lr, mom, apply_fn, batch_size)
        step = timer.compile(_step_random_jit, *args) if iterations else None
        t = time.perf_counter()
        for _ in range(iterations):
            state, loss = step(state, key, pool, local, mask, seg, lr, mom)
            losses.append(loss)
    else:
        step0 = jnp.zeros((), jnp.int32)
        sample = timer.compile(_sample_jit, key, step0, apply_fn, shape)
        variables = sample(key, step0)
        tg = timer.compile(_targets_jit, variables, pool, seg, apply_fn, n, batch_size)
        targets = tg.out_info
        args = (state, variables, targets, pool, local, mask, lr, mom, apply_fn)
        step = timer.compile(_step_fixed_jit, *args) if iterations else None
        t = time.perf_counter()
        targets = tg(variables, pool, seg)
        for _ in range(iterations):
            state, loss = step(state, variables, targets, pool, local, mask, lr, mom)
            losses.append(loss)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t
    return state, np.asarray(jnp.stack(losses)) if losses else np.zeros(0), run_s


def _run_loop(
    timer, state, key, pool, local, mask, seg, lr, mom, *, apply_fn, n, shape,
    iterations, extractor, batch_size,
):  # fmt: skip
    """Cluster by cluster, as the reference code: per-cluster targets and
    gradients from the same pure functions, accumulated, one step.

    Each cluster's row is cut to a power-of-two bucket (at least 16)
    covering its real slots, so the loop does not pay for the widest
    cluster's padding and a handful of compiled programs (one per bucket)
    serve every cluster.
    """
    m = mask.shape[1]
    mask_np = np.asarray(mask)
    last = np.array([np.flatnonzero(r).max() + 1 for r in mask_np])
    buckets = np.minimum(np.maximum(2 ** np.ceil(np.log2(last)).astype(int), 16), m)
    x_all = pool[local]
    x_rows = [x_all[c, : buckets[c]] for c in range(n)]
    mask_rows = [mask[c, : buckets[c]] for c in range(n)]
    seg_rows = [jnp.where(r, 0, 1).astype(jnp.int32) for r in mask_rows]
    step0 = jnp.zeros((), jnp.int32)
    sample = timer.compile(_sample_jit, key, step0, apply_fn, shape)
    v0 = sample.out_info
    tgs, vgs = {}, {}
    for c in range(n):
        b = int(buckets[c])
        if b in tgs:
            continue
        tgs[b] = timer.compile(
            _targets_jit, v0, x_rows[c], seg_rows[c], apply_fn, 1, batch_size
        )
        t0 = tgs[b].out_info
        t0 = jax.ShapeDtypeStruct(t0.shape[1:], t0.dtype)
        w0 = jax.ShapeDtypeStruct((b,), state.weights.dtype)
        vgs[b] = timer.compile(
            _cluster_vg_jit, w0, x_rows[c], mask_rows[c], t0, v0, apply_fn
        )
    tg = [tgs[int(b)] for b in buckets]
    vg = [vgs[int(b)] for b in buckets]
    zeros = jnp.zeros_like(state.weights)
    sgd = timer.compile(_sgd_jit, state, zeros, lr, mom)
    t = time.perf_counter()
    fixed = None
    if extractor == "fixed":
        variables = sample(key, step0)
        fixed = [tg[c](variables, x_rows[c], seg_rows[c])[0] for c in range(n)]
    losses = []
    for _ in range(iterations):
        if extractor == "random":
            variables = sample(key, state.step)
        total = 0.0
        grads = []
        w_rows = list(state.weights)
        for c in range(n):
            if fixed is None:
                target = tg[c](variables, x_rows[c], seg_rows[c])[0]
            else:
                target = fixed[c]
            w_c = w_rows[c][: buckets[c]]
            loss_c, g_c = vg[c](w_c, x_rows[c], mask_rows[c], target, variables)
            total = total + loss_c / n
            grads.append(jnp.pad(g_c / n, (0, m - int(buckets[c]))))
        state = sgd(state, jnp.stack(grads), lr, mom)
        losses.append(total)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t
    return state, np.asarray(jnp.stack(losses)) if losses else np.zeros(0), run_s
