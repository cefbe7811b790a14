"""Fixed-shape batching: index plans with boolean masks, built from a JAX key.

An epoch is described by an index array ``[num_steps, batch_size]`` and a mask of
the same shape. Images are gathered from device-resident arrays inside the
compiled epoch (``lax.scan``), so a ragged last batch or unequal forget/retain
sizes never change a shape and never recompile.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _check_sizes(n: int, batch_size: int) -> None:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"the set to batch is empty or invalid (n={n!r}).")


def num_batches(n: int, batch_size: int) -> int:
    """Number of fixed-shape batches that cover ``n`` examples (last one padded)."""
    _check_sizes(n, batch_size)
    return math.ceil(n / batch_size)


def epoch_indices(
    key: jax.Array, n: int, batch_size: int, *, shuffle: bool = True
) -> tuple[jax.Array, jax.Array]:
    """One pass over ``n`` examples in fixed-shape batches.

    Args:
      key: PRNG key for the permutation (ignored when ``shuffle=False``).
      n: number of examples (static).
      batch_size: batch size (static).
      shuffle: permute the examples.

    Returns:
      ``(idx, mask)``, int32 and bool arrays of shape ``[num_steps, batch_size]``.
      Every example appears exactly once where ``mask`` is True; padded slots
      point at example 0 and are masked out.

    Examples:
      >>> import jax
      >>> idx, mask = epoch_indices(jax.random.key(0), 5, 2)
      >>> idx.shape, int(mask.sum())
      ((3, 2), 5)
    """
    steps = num_batches(n, batch_size)
    order = (
        jax.random.permutation(key, n) if shuffle else jnp.arange(n, dtype=jnp.int32)
    )
    pad = steps * batch_size - n
    idx = jnp.concatenate([order.astype(jnp.int32), jnp.zeros((pad,), jnp.int32)])
    mask = jnp.arange(steps * batch_size) < n
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def subset_epoch_indices(
    key: jax.Array, member_mask: jax.Array, batch_size: int, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """One shuffled pass over the examples where ``member_mask`` is True.

    The subset size may differ between calls (e.g. per shadow model) while the
    shapes stay fixed: ``num_steps`` is static and must cover the largest
    subset. Vmappable over ``key`` and ``member_mask``.

    Returns:
      ``(idx, mask)`` of shape ``[num_steps, batch_size]``; each member appears
      exactly once where ``mask`` is True.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> m = jnp.array([True, False, True, True, False])
      >>> idx, mask = subset_epoch_indices(jax.random.key(0), m, 2, 2)
      >>> sorted(idx[mask].tolist())
      [0, 2, 3]
    """
    n = member_mask.shape[0]
    total = num_steps * batch_size
    priority = jnp.where(member_mask, jax.random.uniform(key, (n,)), 2.0)
    order = jnp.argsort(priority).astype(jnp.int32)
    if total > n:
        order = jnp.concatenate([order, jnp.zeros((total - n,), jnp.int32)])
    else:
        order = order[:total]
    mask = jnp.arange(total) < jnp.sum(member_mask)
    return order.reshape(num_steps, batch_size), mask.reshape(num_steps, batch_size)


def cycle_indices(
    key: jax.Array, n: int, batch_size: int, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """``num_steps`` full batches drawn by cycling through fresh permutations.

    Used for the secondary set of a method (e.g. the forget set while an epoch
    runs over the retain set). Each permutation is used whole before the next
    one starts, so every example is seen equally often (up to one pass). When
    ``n < batch_size`` a batch repeats examples. The mask is all True.

    Returns:
      ``(idx, mask)`` of shape ``[num_steps, batch_size]``.
    """
    _check_sizes(n, batch_size)
    total = num_steps * batch_size
    reps = math.ceil(total / n)
    keys = jax.random.split(key, reps)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(keys).reshape(-1)
    idx = perms[:total].astype(jnp.int32).reshape(num_steps, batch_size)
    return idx, jnp.ones((num_steps, batch_size), bool)


def gather(arrays: dict, idx: jax.Array, mask: jax.Array) -> dict:
    """Gathers ``arrays[k][idx]`` for each key and adds ``"mask"`` and ``"index"``.

    ``"index"`` is ``idx`` itself (the position of each slot's example in its
    set), so a step can key per-example randomness that is the same every
    epoch (e.g. random labels drawn once per example).
    """
    out = {k: jnp.take(v, idx, axis=0) for k, v in arrays.items()}
    out["mask"] = mask
    out["index"] = idx
    return out


def padded_batches(arrays: dict, batch_size: int) -> dict:
    """Stacks numpy arrays into ``[num_steps, batch_size, ...]`` with a mask.

    For evaluation: no shuffling, zero padding, ``mask`` marks real examples.
    """
    n = len(next(iter(arrays.values())))
    steps = num_batches(n, batch_size)
    pad = steps * batch_size - n
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        widths = [(0, pad)] + [(0, 0)] * (v.ndim - 1)
        out[k] = np.pad(v, widths).reshape(steps, batch_size, *v.shape[1:])
    out["mask"] = (np.arange(steps * batch_size) < n).reshape(steps, batch_size)
    return out
