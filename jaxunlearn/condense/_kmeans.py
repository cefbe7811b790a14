"""k-means (k-means++ seeding, Lloyd iterations) and per-class fine labels.

Blend splits every class into ``K`` sub-classes by k-means on random-network
features (Algorithm 1 of the Blend paper): k-means++ initialisation, at most
``iters`` Lloyd iterations in a ``lax.while_loop`` that stops once the summed
centroid shift drops below ``tol``, and an empty cluster re-seeded to a
random point. ``kmeans`` takes an optional point mask, so
:func:`class_kmeans` runs every class as one padded row of a single vmapped
program.
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


class KMeansResult(NamedTuple):
    """Output of :func:`kmeans`.

    Attributes:
      assignment: int32 ``[n]``, nearest final centroid of every point; -1 for
        points outside ``mask``.
      centroids: ``[k, d]`` final centroids.
      iterations: int32 scalar, Lloyd iterations run.
      shift: scalar, summed centroid shift of the last iteration.
    """

    assignment: jax.Array
    centroids: jax.Array
    iterations: jax.Array
    shift: jax.Array


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``[n, k]`` (clipped at 0)."""
    d = (
        jnp.sum(x * x, axis=1)[:, None]
        - 2.0 * x @ c.T
        + jnp.sum(c * c, axis=1)[None, :]
    )
    return jnp.maximum(d, 0.0)


def _inverse_cdf(weight: jax.Array, u: jax.Array) -> jax.Array:
    """Index drawn with probability ``weight / sum(weight)`` for uniform ``u``."""
    cdf = jnp.cumsum(weight)
    idx = jnp.searchsorted(cdf, u * cdf[-1], side="right")
    return jnp.minimum(idx, weight.shape[0] - 1)


def _kmeans_pp(x: jax.Array, k: int, mask: jax.Array, u: jax.Array) -> jax.Array:
    """k-means++ seeding: each next centroid drawn with probability ~ D(x)^2.

    ``u`` holds ``k`` uniforms, one per draw.
    """
    n, d = x.shape
    valid = mask.astype(x.dtype)
    centroids = jnp.zeros((k, d), x.dtype).at[0].set(x[_inverse_cdf(valid, u[0])])
    closest = jnp.full((n,), jnp.inf, x.dtype)

    def body(i, carry):
        centroids, closest = carry
        closest = jnp.minimum(closest, jnp.sum((x - centroids[i - 1]) ** 2, axis=1))
        weight = jnp.where(mask, closest, 0.0)
        # All remaining points coincide with a centroid: draw uniformly.
        weight = jnp.where(jnp.sum(weight) > 0, weight, valid)
        return centroids.at[i].set(x[_inverse_cdf(weight, u[i])]), closest

    centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, closest))
    return centroids


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}.")
    return int(k)


def kmeans(
    x: ArrayLike,
    k: int,
    *,
    key: jax.Array,
    iters: int = 100,
    tol: float = 1e-4,
    mask: ArrayLike | None = None,
) -> KMeansResult:
    """k-means with k-means++ seeding (pure; jit and vmap friendly).

    Each Lloyd iteration assigns every point to its nearest centroid
    (Euclidean), moves each centroid to the mean of its points and re-seeds a
    centroid that got no point to a uniformly drawn point. The loop stops
    after ``iters`` iterations or once the summed centroid shift
    ``sum_c ||c_new - c_old||`` is below ``tol``. The returned assignment is
    against the final centroids.

    Args:
      x: points ``[n, d]``.
      k: number of clusters (static).
      key: PRNG key; equal keys give equal results.
      iters: maximum Lloyd iterations (static).
      tol: stopping threshold on the summed centroid shift.
      mask: optional boolean ``[n]``; points outside it are ignored (fixed
        shapes for padded, vmapped use). At least one point must be inside.

    Returns:
      :class:`KMeansResult` ``(assignment, centroids, iterations, shift)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import condense
      >>> x = jnp.array([[0.0], [0.1], [10.0], [10.1]])
      >>> res = condense.kmeans(x, 2, key=jax.random.key(0))
      >>> bool(res.assignment[0] == res.assignment[1] != res.assignment[2])
      True
    """
    k = _check_k(k)
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 0:
        raise ValueError(f"`iters` must be an int >= 0, got {iters!r}.")
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`x` must have shape [n, d], got {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    n = x.shape[0]
    if n == 0:
        raise ValueError("`x` is empty.")
    if mask is None:
        mask = jnp.ones((n,), bool)
    else:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_ or mask.shape != (n,):
            raise ValueError(
                f"`mask` must be a boolean array of shape [n] = ({n},), got "
                f"{mask.dtype} {mask.shape}."
            )
    # All randomness in one flat draw (XLA:CPU compiles every threefry call
    # site, and multi-dimensional ones, slowly): k for the seeding, then k
    # per Lloyd iteration for re-seeding empty clusters.
    u = jax.random.uniform(key, ((1 + iters) * k,))
    centroids = _kmeans_pp(x, k, mask, u[:k])
    reseed_u = u[k:].reshape(iters, k) if iters else u[:k].reshape(1, k)
    weight = mask.astype(x.dtype)

    def assign(c):
        return jnp.argmin(_sq_dists(x, c), axis=1)

    def cond(state):
        it, _, shift = state
        return (it < iters) & (shift >= tol)

    def body(state):
        it, c, _ = state
        onehot = jax.nn.one_hot(assign(c), k, dtype=x.dtype) * weight[:, None]
        counts = jnp.sum(onehot, axis=0)
        means = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        draws = jax.vmap(lambda v: _inverse_cdf(weight, v))(reseed_u[it])
        reseed = x[draws]
        new = jnp.where((counts > 0)[:, None], means, reseed)
        shift = jnp.sum(jnp.sqrt(jnp.sum((new - c) ** 2, axis=1)))
        return it + 1, new, shift

    state = (jnp.int32(0), centroids, jnp.asarray(jnp.inf, x.dtype))
    iterations, centroids, shift = jax.lax.while_loop(cond, body, state)
    assignment = jnp.where(mask, assign(centroids), -1).astype(jnp.int32)
    return KMeansResult(assignment, centroids, iterations, shift)


def _check_labels(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(
            f"`labels` must have shape [N] = ({n},) matching `features`, got "
            f"{labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`labels` must be integers, got dtype {labels.dtype}.")
    if n and labels.min() < 0:
        raise ValueError(f"`labels` must be >= 0, got min {labels.min()}.")
    return labels.astype(np.int64)


def _class_kmeans_padded(x, mask, keys, *, k, iters, tol):
    fn = lambda xi, mi, ki: kmeans(xi, k, key=ki, iters=iters, tol=tol, mask=mi)
    return jax.vmap(fn)(x, mask, keys)


_class_kmeans_jit = jax.jit(_class_kmeans_padded, static_argnames=("k", "iters"))


def class_kmeans(
    features: ArrayLike,
    labels: ArrayLike,
    k_per_class: int,
    *,
    key: jax.Array,
    iters: int = 100,
    tol: float = 1e-4,
) -> np.ndarray:
    """Fine labels ``class * K + cluster`` from k-means inside every class.

    Every class present in ``labels`` is one padded row of a single jitted,
    vmapped :func:`kmeans` (class ``c`` uses ``jax.random.fold_in(key, c)``).
    Run it on ALL training points, forget set included, so that the
    free / residual test of :func:`partition` means something. A cluster
    left empty simply has no member (``k_per_class`` larger than a class
    leaves some empty).

    Args:
      features: ``[N, D]`` features (e.g. :func:`random_features`).
      labels: int ``[N]`` class labels.
      k_per_class: ``K``, clusters per class (the IPC of the papers).
      key: PRNG key.
      iters: maximum Lloyd iterations.
      tol: stopping threshold on the summed centroid shift.

    Returns:
      int64 numpy ``[N]`` fine labels in ``[0, (max label + 1) * K)``.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxunlearn import condense
      >>> f = np.array([[0.0], [0.1], [9.0], [9.1], [0.0], [5.0]], np.float32)
      >>> y = np.array([0, 0, 0, 0, 1, 1])
      >>> fine = condense.class_kmeans(f, y, 2, key=jax.random.key(0))
      >>> bool(fine[0] == fine[1] != fine[2] == fine[3]), fine[4:].tolist()
      (True, [2, 3])
    """
    k = _check_k(k_per_class)
    feats = np.asarray(features)
    if feats.ndim != 2:
        raise ValueError(f"`features` must have shape [N, D], got {feats.shape}.")
    if not np.issubdtype(feats.dtype, np.number):
        raise TypeError(f"`features` must hold numbers, got dtype {feats.dtype}.")
    n = feats.shape[0]
    if n == 0:
        raise ValueError("`features` is empty.")
    labels = _check_labels(labels, n)
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    width = max(len(m) for m in members)
    idx = np.zeros((len(classes), width), np.int64)
    mask = np.zeros((len(classes), width), bool)
    for row, m in enumerate(members):
        idx[row, : len(m)] = m
        mask[row, : len(m)] = True
    x = feats.astype(np.float32)[idx]
    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.asarray(classes))
    res = _class_kmeans_jit(
        jnp.asarray(x), jnp.asarray(mask), keys, k=k, iters=int(iters), tol=tol
    )
    assignment = np.asarray(res.assignment)
    fine = np.empty(n, np.int64)
    for row, (c, m) in enumerate(zip(classes, members, strict=True)):
        fine[m] = c * k + assignment[row, : len(m)]
    return fine
