"""Distribution matching (DM), the pixel-space condensation baseline.

``ipc`` synthetic images per class, initialised from real images of the
class, are learned directly (every pixel a parameter). Each iteration samples
a fresh random ConvNet-3 and a real batch of up to ``batch_real`` images per
class, and takes one SGD step (momentum 0.5) on

    L = sum_c || mean f(real_c) - mean f(syn_c) ||^2 .

All classes run as one padded, jitted program: the real batch of every class
is one row (a Gumbel top-k draw without replacement among the class's
members; classes smaller than ``batch_real`` mask the missing slots).

References:
  Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023
  (defaults: image lr 1.0, momentum 0.5, batch_real 256, no augmentation
  here: the DSA augmentation of the original is not implemented).
"""

import numbers
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxunlearn.condense import _features
from jaxunlearn.types import ApplyFn


class DMState(NamedTuple):
    """Optimisation state of DM (a pytree).

    Attributes:
      images: ``[n_classes, ipc, H, W, C]`` synthetic images.
      momentum: SGD momentum buffer, same shape.
      step: int32 scalar, iterations done.
    """

    images: jax.Array
    momentum: jax.Array
    step: jax.Array


def dm_init(images: ArrayLike) -> DMState:
    """State from initial synthetic images ``[n_classes, ipc, H, W, C]``."""
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 5:
        raise ValueError(
            f"`images` must have shape [n_classes, ipc, H, W, C], got {images.shape}."
        )
    return DMState(images, jnp.zeros_like(images), jnp.zeros((), jnp.int32))


def sample_class_batches(
    key: jax.Array, class_mask: jax.Array, batch_real: int
) -> tuple[jax.Array, jax.Array]:
    """Per class, up to ``batch_real`` member slots drawn without replacement.

    Args:
      key: PRNG key.
      class_mask: bool ``[n_classes, max_n]`` real members of each class row.
      batch_real: slots per class (static; capped at ``max_n``).

    Returns:
      ``(slots [n_classes, b], valid [n_classes, b])``: column indices into
      the class rows and which of them are real (a class with fewer than
      ``b`` members has its extra slots invalid).
    """
    b = min(int(batch_real), class_mask.shape[1])
    g = jax.random.gumbel(key, (class_mask.size,)).reshape(class_mask.shape)
    scores = jnp.where(class_mask, g, -jnp.inf)
    _, slots = jax.lax.top_k(scores, b)
    valid = jnp.arange(b)[None, :] < jnp.sum(class_mask, axis=1, keepdims=True)
    return slots, valid


def dm_loss(
    syn: jax.Array,
    real: jax.Array,
    real_valid: jax.Array,
    variables,
    *,
    apply_fn: ApplyFn,
) -> jax.Array:
    """``sum_c ||mean f(real_c) - mean f(syn_c)||^2``.

    Args:
      syn: ``[n_classes, ipc, H, W, C]``.
      real: ``[n_classes, b, H, W, C]``.
      real_valid: bool ``[n_classes, b]``.
      variables: extractor variables; apply_fn: the extractor.
    """
    c, ipc = syn.shape[:2]
    b = real.shape[1]
    real = jnp.where(real_valid[..., None, None, None], real, 0.0)
    f_real = _features.embed(
        variables, real.reshape(c * b, *real.shape[2:]), apply_fn=apply_fn
    ).reshape(c, b, -1)
    w = real_valid.astype(f_real.dtype)
    mean_real = (
        jnp.sum(f_real * w[..., None], axis=1)
        / jnp.maximum(jnp.sum(w, axis=1), 1.0)[:, None]
    )
    f_syn = _features.embed(
        variables, syn.reshape(c * ipc, *syn.shape[2:]), apply_fn=apply_fn
    ).reshape(c, ipc, -1)
    diff = jax.lax.stop_gradient(mean_real) - jnp.mean(f_syn, axis=1)
    return jnp.sum(diff**2)


def dm_step(
    state: DMState,
    key: jax.Array,
    pool: jax.Array,
    class_index: jax.Array,
    class_mask: jax.Array,
    *,
    apply_fn: ApplyFn,
    batch_real: int,
    learning_rate: ArrayLike = 1.0,
    momentum: ArrayLike = 0.5,
) -> tuple[DMState, jax.Array]:
    """One DM iteration, all classes at once (pure; jit it).

    The extractor and the real batches are drawn from
    ``fold_in(key, state.step)``.

    Args:
      state: from :func:`dm_init`.
      key: PRNG key of the run.
      pool: ``[N, H, W, C]`` real images.
      class_index: int ``[n_classes, max_n]`` pool indices of each class.
      class_mask: bool ``[n_classes, max_n]``.
      apply_fn: the extractor (:func:`extractor_apply_fn`).
      batch_real: real images per class and iteration (static).
      learning_rate: SGD learning rate on the pixels.
      momentum: SGD momentum.

    Returns:
      ``(new_state, loss)``, the loss before the update.
    """
    k_net, k_batch = jax.random.split(jax.random.fold_in(key, state.step))
    variables = _features.sample_extractor(apply_fn, k_net, pool.shape[1:])
    slots, valid = sample_class_batches(k_batch, class_mask, batch_real)
    real = pool[jnp.take_along_axis(class_index, slots, axis=1)]
    loss, grad = jax.value_and_grad(dm_loss)(
        state.images, real, valid, variables, apply_fn=apply_fn
    )
    buf = momentum * state.momentum + grad
    return DMState(state.images - learning_rate * buf, buf, state.step + 1), loss


def _dm_step(state, key, pool, cidx, cmask, lr, mom, apply_fn, batch_real):
    return dm_step(
        state,
        key,
        pool,
        cidx,
        cmask,
        apply_fn=apply_fn,
        batch_real=batch_real,
        learning_rate=lr,
        momentum=mom,
    )


_dm_step_jit = jax.jit(_dm_step, static_argnums=(7, 8))


def dm(
    images: ArrayLike,
    labels: ArrayLike,
    ipc: int,
    *,
    key: jax.Array,
    iterations: int = 20000,
    learning_rate: float = 1.0,
    momentum: float = 0.5,
    batch_real: int = 256,
    width: int = 128,
    depth: int = 3,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Distribution-matching condensation (runs the whole loop).

    Args:
      images: ``[N, H, W, C]`` real images.
      labels: int ``[N]``.
      ipc: synthetic images per class; every class needs at least ``ipc``
        images.
      key: PRNG key (initial images, extractors, real batches).
      iterations: SGD steps (20000 in the DM paper).
      learning_rate: image learning rate (1.0 in DM).
      momentum: SGD momentum (0.5 in DM).
      batch_real: real images per class and iteration (256 in DM).
      width: extractor conv channels.
      depth: extractor conv blocks.

    Returns:
      ``(images [n_classes * ipc, H, W, C], labels int32 [n_classes * ipc],
      diagnostics)`` (numpy; classes in increasing order, ``ipc`` each);
      diagnostics hold ``"loss"`` ``[iterations]``, ``"compile_s"``,
      ``"run_s"``, ``"time_s"``.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import condense
      >>> x = np.random.default_rng(0).random((20, 8, 8, 1), np.float32)
      >>> y = np.arange(20) % 2
      >>> syn, sy, diag = condense.dm(x, y, 3, key=jax.random.key(0),
      ...     iterations=2, batch_real=4, width=4)
      >>> syn.shape, sy.tolist()
      ((6, 8, 8, 1), [0, 0, 0, 1, 1, 1])
    """
    t_all = time.perf_counter()
    images = _features.check_image_batch("images", images)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(
            f"`labels` must have shape [N] = ({len(images)},), got {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`labels` must be integers, got dtype {labels.dtype}.")
    for name, v, lo in (("ipc", ipc, 1), ("batch_real", batch_real, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, numbers.Integral)
        or iterations < 0
    ):
        raise ValueError(f"`iterations` must be an int >= 0, got {iterations!r}.")
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    small = [int(c) for c, m in zip(classes, members, strict=True) if len(m) < ipc]
    if small:
        raise ValueError(f"`ipc` = {ipc} exceeds the size of classes {small}.")
    width_n = max(len(m) for m in members)
    cidx = np.zeros((len(classes), width_n), np.int32)
    cmask = np.zeros((len(classes), width_n), bool)
    k_init, k_run = jax.random.split(key)
    init = []
    for row, m in enumerate(members):
        cidx[row, : len(m)] = m
        cmask[row, : len(m)] = True
        pick = jax.random.choice(jax.random.fold_in(k_init, row), len(m), (ipc,), False)
        init.append(images[m[np.asarray(pick)]])
    state = dm_init(np.stack(init))
    apply_fn = _features.extractor_apply_fn(width=width, depth=depth)
    pool, cidx, cmask = jnp.asarray(images), jnp.asarray(cidx), jnp.asarray(cmask)
    lr = jnp.asarray(learning_rate, jnp.float32)
    mom = jnp.asarray(momentum, jnp.float32)
    t = time.perf_counter()
    step = _dm_step_jit.lower(
        state, k_run, pool, cidx, cmask, lr, mom, apply_fn, int(batch_real)
    ).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    losses = []
    for _ in range(int(iterations)):
        state, loss = step(state, k_run, pool, cidx, cmask, lr, mom)
        losses.append(loss)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t
    syn = np.asarray(state.images).reshape(-1, *images.shape[1:])
    syn_labels = np.repeat(classes, ipc).astype(np.int32)
    diag = {
        "loss": np.asarray(jnp.stack(losses)) if losses else np.zeros(0, np.float32),
        "compile_s": compile_s,
        "run_s": run_s,
        "time_s": time.perf_counter() - t_all,
    }
    return syn, syn_labels, diag
