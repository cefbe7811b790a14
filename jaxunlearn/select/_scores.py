"""Deletion scores for selective removal; higher = delete first.

Definitions and the paper's wording: ``docs/methods_notes.md``, "Deletion scores".

All scores rate the candidate points ``x`` (rows; normally the forget set P1)
against summary statistics of P1 and P2 (the set to keep): means, a shared
precision matrix estimated on P2, or the sets themselves for ``knn_ratio``.
Every function is a pure ``jnp`` function (jit / vmap friendly);
:func:`fit_gaussian` and :func:`score` are host-side conveniences.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.select._checks import check_matrix

SCORES = (
    "cos_mu2",
    "lr_cos",
    "maha_mu2",
    "lr_maha",
    "lr_maha_sq",
    "knn_ratio",
    "norm",
    "random",
)


def _cos(x, mu):
    num = x @ mu
    den = jnp.linalg.norm(x, axis=-1) * jnp.linalg.norm(mu)
    return num / jnp.maximum(den, 1e-12)


def cos_mu2(x, mu2):
    """``1 - cos(x, mu2)``: far in angle from the kept set's mean (TF-IDF)."""
    return 1.0 - _cos(x, mu2)


def lr_cos(x, mu1, mu2):
    """``[1 - cos(x, mu2)] - [1 - cos(x, mu1)]``: far from P2, close to P1."""
    return _cos(x, mu1) - _cos(x, mu2)


def _maha_sq(x, mu, precision):
    d = x - mu
    return jnp.einsum("nd,de,ne->n", d, precision, d)


def maha_mu2(x, mu2, precision):
    """Squared Mahalanobis distance to P2's mean under P2's precision."""
    return _maha_sq(x, mu2, precision)


def lr_maha(x, mu1, mu2, precision, *, squared: bool = False):
    """``d(x; mu2) - d(x; mu1)`` with Mahalanobis *distances* (the paper's score).

    ``squared=True`` gives ``d2(x; mu2) - d2(x; mu1)`` instead: twice the
    shared-covariance Gaussian log-likelihood ratio ``log p1(x) / p2(x)``,
    which ranks differently (``score("lr_maha_sq", ...)``).

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[3.0, 0.0]]); eye = jnp.eye(2)
    >>> mu1, mu2 = jnp.array([1.0, 0.0]), jnp.zeros(2)
    >>> d = lr_maha(x, mu1, mu2, eye)
    >>> d2 = lr_maha(x, mu1, mu2, eye, squared=True)
    >>> float(d[0]), float(d2[0])
    (1.0, 5.0)
    """
    d2 = _maha_sq(x, mu2, precision)
    d1 = _maha_sq(x, mu1, precision)
    if squared:
        return d2 - d1
    return jnp.sqrt(jnp.maximum(d2, 0.0)) - jnp.sqrt(jnp.maximum(d1, 0.0))


def norm(x):
    """``||x||_2`` (``l2-norm`` / ``tfidf-norm``).

    On TF-IDF rows use the un-normalised matrix (``norm=None``): sklearn's
    default rows all have norm 1 and the ranking would be float noise.
    """
    return jnp.linalg.norm(x, axis=-1)


def random(key, num: int):
    """Uniform scores: deleting the top ``f`` is a uniform random ``f``-subset."""
    return jax.random.uniform(key, (num,))


def knn_sq_distances(x, reference, k: int, *, chunk_size: int = 256):
    """Squared distances from each row of ``x`` to its ``k`` nearest rows of
    ``reference``, ascending; exact, computed ``chunk_size`` rows at a time so
    only a ``[chunk_size, len(reference)]`` block is ever in memory.
    """
    if k > reference.shape[0]:
        raise ValueError(f"k={k} exceeds the reference set size {reference.shape[0]}.")
    n = x.shape[0]
    pad = (-n) % chunk_size
    xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk_size, x.shape[1])
    ref_sq = jnp.sum(reference * reference, axis=1)

    def block(xb):
        d2 = jnp.sum(xb * xb, axis=1)[:, None] - 2 * xb @ reference.T + ref_sq[None]
        neg, _ = jax.lax.top_k(-d2, k)
        return jnp.maximum(-neg, 0.0)

    out = jax.lax.map(block, xp).reshape(-1, k)
    return out[:n]


def _log_knn_density(sq, dim):
    """Gaussian-kernel density over the k neighbours, bandwidth = k-th NN distance."""
    k = sq.shape[1]
    h2 = jnp.maximum(sq[:, -1], 1e-12)  # bandwidth >= 1e-6
    kernel = jax.nn.logsumexp(-sq / (2 * h2[:, None]), axis=1) - jnp.log(k)
    return kernel - 0.5 * dim * jnp.log(2 * jnp.pi * h2)


def knn_ratio(x, p1, p2, *, k: int = 10, exclude_self: bool = True, chunk_size=256):
    """``log p1_hat(x) - log p2_hat(x)`` from k-nearest-neighbour kernel densities.

    Each density is a Gaussian kernel average over the ``k`` nearest
    neighbours of ``x`` in that set with bandwidth ``h`` = the k-th neighbour
    distance, normalised in ``D`` dimensions (so it behaves like the classic
    k-NN density ``~ 1 / h^D``). With ``exclude_self`` (``x`` is a subset of
    ``p1``, the usual case) the nearest P1 neighbour -- the point itself -- is
    dropped. ``k = 10`` by default (the paper does not state it).

    The ``D log h`` normalisation makes the score scale with the dimension
    (hundreds in a 6,000-word TF-IDF space); only the ranking matters. Exact
    duplicates give a zero bandwidth, clamped to ``1e-6`` distance.
    """
    extra = 1 if exclude_self else 0
    sq1 = knn_sq_distances(x, p1, k + extra, chunk_size=chunk_size)[:, extra:]
    sq2 = knn_sq_distances(x, p2, k, chunk_size=chunk_size)
    dim = x.shape[1]
    return _log_knn_density(sq1, dim) - _log_knn_density(sq2, dim)


def ledoit_wolf(x):
    """Ledoit-Wolf shrunk covariance of the rows of ``x`` (mean removed).

    ``(1 - s) S + s (tr(S) / D) I`` with the Ledoit-Wolf (2004) optimal ``s``;
    agrees with ``sklearn.covariance.LedoitWolf``.
    """
    x = jnp.asarray(x, jnp.float32)
    n, dim = x.shape
    xc = x - jnp.mean(x, axis=0)
    emp = xc.T @ xc / n
    mu = jnp.trace(emp) / dim
    x2 = xc * xc
    beta_ = jnp.sum(x2.T @ x2) / n
    delta_ = jnp.sum(emp * emp)
    beta = (beta_ - delta_) / (dim * n)
    delta = (delta_ - 2 * mu * jnp.trace(emp) + dim * mu * mu) / dim
    beta = jnp.minimum(beta, delta)
    shrink = jnp.where(delta > 0, beta / jnp.where(delta > 0, delta, 1.0), 0.0)
    return (1 - shrink) * emp + shrink * mu * jnp.eye(dim), shrink


def fit_gaussian(x, *, covariance: str = "ridge", ridge: float = 1e-6):
    """Mean and precision of the rows of ``x`` for the Mahalanobis scores.

    Args:
      x: ``[N, D]`` features (the set whose covariance is used, P2).
      covariance: ``"ridge"`` (empirical covariance + ``ridge * I``) or
        ``"ledoit_wolf"``.
      ridge: the ridge for ``"ridge"``; ``0`` demands a non-singular covariance.

    Returns:
      ``(mean [D], precision [D, D])``.

    Raises:
      ValueError: on an empty set, an unknown estimator, or a covariance that
        cannot be inverted (use ``ridge > 0`` or ``"ledoit_wolf"``).
    """
    check_matrix("x", x)
    if covariance not in ("ridge", "ledoit_wolf"):
        raise ValueError(
            f"covariance must be 'ridge' or 'ledoit_wolf', got {covariance!r}."
        )
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}.")
    x = jnp.asarray(x, jnp.float32)
    mean = jnp.mean(x, axis=0)
    if covariance == "ledoit_wolf":
        cov64 = np.asarray(ledoit_wolf(x)[0], np.float64)
    else:
        # float64 on the host: float32 rounding would lift the zero
        # eigenvalues of a rank-deficient covariance to ~1e-8 relative.
        x64 = np.asarray(x, np.float64)
        xc = x64 - x64.mean(axis=0)
        cov64 = xc.T @ xc / x64.shape[0] + ridge * np.eye(x64.shape[1])
    eig = np.linalg.eigvalsh(cov64)
    if eig[0] <= 1e-10 * max(eig[-1], 1e-30):
        raise ValueError(
            f"covariance of x is singular (smallest eigenvalue {eig[0]:.3g},"
            f" largest {eig[-1]:.3g}; {x.shape[0]} rows in {x.shape[1]}"
            " dimensions); use ridge > 0 or covariance='ledoit_wolf'."
        )
    precision = np.linalg.inv(cov64)
    return mean, jnp.asarray(0.5 * (precision + precision.T), jnp.float32)


def score(
    name: str,
    forget,
    retain,
    *,
    key=None,
    k: int = 10,
    covariance: str = "ridge",
    ridge: float = 1e-6,
    chunk_size: int = 256,
):
    """Scores every row of ``forget`` (P1) by ``name`` against ``retain`` (P2).

    Dense arrays only; for sparse TF-IDF call the functions above with the
    means computed from the sparse matrix (``experiments/distributional_text.py``).

    Args:
      name: one of :data:`SCORES`.
      forget, retain: ``[N1, D]`` and ``[N2, D]`` feature arrays.
      key: a JAX key (``"random"`` only).
      k, chunk_size: for ``"knn_ratio"``.
      covariance, ridge: for the Mahalanobis scores (fit on ``retain``).

    Returns:
      ``[N1]`` scores, higher = delete first.

    >>> import numpy as np
    >>> forget = np.array([[0., 0.], [3., 0.], [1., 0.]])
    >>> retain = np.array([[2., 1.], [2., -1.], [4., 1.], [4., -1.]])
    >>> int(np.argmax(score("maha_mu2", forget, retain, ridge=1e-3)))
    0
    """
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; valid: {', '.join(SCORES)}.")
    check_matrix("forget", forget)
    check_matrix("retain", retain)
    if np.shape(forget)[1] != np.shape(retain)[1]:
        raise ValueError(
            f"forget has {np.shape(forget)[1]} features but retain has"
            f" {np.shape(retain)[1]}."
        )
    x1 = jnp.asarray(forget, jnp.float32)
    x2 = jnp.asarray(retain, jnp.float32)
    if name == "random":
        if key is None:
            raise ValueError("score('random', ...) needs key=.")
        return random(key, x1.shape[0])
    if name == "norm":
        return norm(x1)
    if name == "knn_ratio":
        return knn_ratio(x1, x1, x2, k=k, chunk_size=chunk_size)
    mu1 = jnp.mean(x1, axis=0)
    if name in ("cos_mu2", "lr_cos"):
        mu2 = jnp.mean(x2, axis=0)
        return cos_mu2(x1, mu2) if name == "cos_mu2" else lr_cos(x1, mu1, mu2)
    mu2, precision = fit_gaussian(x2, covariance=covariance, ridge=ridge)
    if name == "maha_mu2":
        return maha_mu2(x1, mu2, precision)
    return lr_maha(x1, mu1, mu2, precision, squared=name == "lr_maha_sq")
