"""Random, never-trained ConvNet-3 feature extractors.

Blend and DM measure images through the ``embed`` features (the flattened
input of the linear head) of a randomly initialised ConvNet-3
(:class:`jaxunlearn.models.ConvNet3`, instance norm). ``extractor_apply_fn``
builds the model, ``sample_extractor`` draws its variables from a key (pure,
so it runs inside a jitted step that samples a fresh network every
iteration), ``embed`` returns the features of a batch and ``random_features``
runs a whole data set through one extractor in fixed-size batches.
"""

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxunlearn import models
from jaxunlearn.types import ApplyFn, Variables

_HEAD_CLASSES = 2  # the head is never used; the smallest valid size


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def check_image_batch(name: str, images: Any, *, min_rank: int = 4) -> np.ndarray:
    """Returns ``images`` as a float32 numpy array after checking its rank."""
    arr = np.asarray(images)
    if arr.ndim != min_rank:
        raise ValueError(
            f"`{name}` must be an image array of shape [N, H, W, C], got shape "
            f"{arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"`{name}` must hold numbers, got dtype {arr.dtype}.")
    return arr.astype(np.float32, copy=False)


def extractor_apply_fn(*, width: int = 128, depth: int = 3) -> ApplyFn:
    """The ``apply_fn`` of a ConvNet-3 feature extractor.

    Args:
      width: channels of every conv layer (128 in the papers).
      depth: number of conv blocks (3 in the papers).

    Returns:
      A hashable ``apply_fn`` (usable as a static argument of ``jax.jit``) of
      ``models.get_model("convnet3", 2, width=width, depth=depth)``; its
      2-way head is never used.
    """
    _check_positive_int("width", width)
    _check_positive_int("depth", depth)
    model = models.get_model("convnet3", _HEAD_CLASSES, width=width, depth=depth)
    return models.make_apply_fn(model)


def _param_shapes(apply_fn: ApplyFn, image_shape: tuple[int, ...]):
    example = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    return jax.eval_shape(
        lambda k, x: models.init(apply_fn.model, k, x), jax.random.key(0), example
    )


def sample_extractor(
    apply_fn: ApplyFn, key: jax.Array, image_shape: tuple[int, ...]
) -> Variables:
    """Draws the variables of a fresh random extractor (pure; jit-friendly).

    PyTorch's default initialisation, as in the reference code's never
    trained extractors: every conv / dense kernel and bias is uniform in
    ``+-1/sqrt(fan_in)`` (``kaiming_uniform(a=sqrt(5))``), instance-norm
    scales are 1 and their biases 0. All values come from ONE flat uniform
    draw (XLA:CPU compiles a multi-dimensional threefry draw per parameter
    shape many times slower than a flat one).

    Args:
      apply_fn: from :func:`extractor_apply_fn`.
      key: PRNG key; equal keys give equal networks.
      image_shape: ``(H, W, C)`` of the images it will see.

    Returns:
      The variables ``{"params": ...}`` of an untrained ConvNet-3.
    """
    shapes = _param_shapes(apply_fn, tuple(image_shape))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    kernels = {}
    for path, leaf in leaves:
        if path[-1].key == "kernel":
            kernels[tuple(p.key for p in path[:-1])] = int(np.prod(leaf.shape[:-1]))
    random_leaves = [
        (path, leaf)
        for path, leaf in leaves
        if tuple(p.key for p in path[:-1]) in kernels
    ]
    total = sum(int(np.prod(leaf.shape)) for _, leaf in random_leaves)
    flat = jax.random.uniform(key, (total,), jnp.float32, -1.0, 1.0)
    out, offset = [], 0
    for path, leaf in leaves:
        owner = tuple(p.key for p in path[:-1])
        if owner in kernels:
            size = int(np.prod(leaf.shape))
            bound = 1.0 / np.sqrt(kernels[owner])
            piece = flat[offset : offset + size].reshape(leaf.shape) * bound
            out.append(piece.astype(leaf.dtype))
            offset += size
        elif path[-1].key == "scale":
            out.append(jnp.ones(leaf.shape, leaf.dtype))
        else:
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def embed(variables: Variables, images: ArrayLike, *, apply_fn: ApplyFn) -> jax.Array:
    """Features ``[N, D]`` of ``images`` ``[N, H, W, C]`` (pure; jit-friendly).

    ``D = width * H' * W'`` with the spatial size halved ``depth`` times
    (2048 for 32x32 inputs at width 128, depth 3).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import condense
      >>> f = condense.extractor_apply_fn(width=4, depth=2)
      >>> v = condense.sample_extractor(f, jax.random.key(0), (8, 8, 1))
      >>> condense.embed(v, jnp.zeros((3, 8, 8, 1)), apply_fn=f).shape
      (3, 16)
    """
    (_, feats), _ = apply_fn(variables, images, train=False, return_features=True)
    return feats


def _embed_batch(apply_fn, variables, batch):
    return embed(variables, batch, apply_fn=apply_fn)


_embed_batch_jit = jax.jit(_embed_batch, static_argnums=(0,))
_sample_extractor_jit = jax.jit(sample_extractor, static_argnums=(0, 2))


def batched_embed(
    variables: Variables,
    images: np.ndarray,
    *,
    apply_fn: ApplyFn,
    batch_size: int = 256,
) -> np.ndarray:
    """Runs ``images`` through one extractor in fixed-size padded batches.

    One compiled batch called from a host loop (XLA:CPU runs convolutions
    inside a loop body many times slower than outside one).

    Returns:
      float32 numpy features ``[N, D]``.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    n = len(images)
    if n == 0:
        raise ValueError("`images` is empty.")
    bs = min(batch_size, n)
    out = []
    for start in range(0, n, bs):
        chunk = images[start : start + bs]
        if len(chunk) < bs:
            pad = np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        out.append(_embed_batch_jit(apply_fn, variables, jnp.asarray(chunk)))
    return np.concatenate([np.asarray(o) for o in out])[:n]


def random_features(
    images: ArrayLike,
    *,
    key: jax.Array,
    width: int = 128,
    depth: int = 3,
    batch_size: int = 256,
) -> np.ndarray:
    """Features of ``images`` from one untrained ConvNet-3 (for clustering).

    Args:
      images: ``[N, H, W, C]`` images, normalised as they are trained on.
      key: PRNG key of the extractor.
      width: conv channels.
      depth: conv blocks.
      batch_size: images per compiled batch (the last one is padded).

    Returns:
      float32 numpy ``[N, D]``.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import condense
      >>> x = np.zeros((5, 8, 8, 1), np.float32)
      >>> condense.random_features(x, key=jax.random.key(0), width=4).shape
      (5, 4)
    """
    images = check_image_batch("images", images)
    apply_fn = extractor_apply_fn(width=width, depth=depth)
    variables = _sample_extractor_jit(apply_fn, key, tuple(images.shape[1:]))
    return batched_embed(variables, images, apply_fn=apply_fn, batch_size=batch_size)
