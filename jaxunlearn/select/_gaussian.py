"""Gaussian KL divergences and the closed-form removal / preservation frontier.

Distributional unlearning (docs/methods_notes.md) edits a data set whose
distribution is ``q`` so that it is far from the distribution to forget ``p1``
(removal: ``KL(p1 || q) >= alpha``) and close to the one to keep ``p2``
(preservation: ``KL(p2 || q) <= eps``). For Gaussians sharing a covariance
``S`` every KL is half a squared Mahalanobis distance, and with
``Delta = KL(p1 || p2)`` the least preservation cost of removal ``alpha`` is
``eps*(alpha) = 0`` for ``alpha <= Delta`` (take ``q = p2``) and
``(sqrt(alpha) - sqrt(Delta))**2`` beyond it (Prop. 1), attained by moving the
mean along the line from ``mu1`` through ``mu2``, past ``mu2``.
"""

import jax.numpy as jnp

from jaxunlearn.select._checks import check_nonnegative


def _solve(cov, v):
    cov = jnp.asarray(cov)
    if cov.ndim == 0:
        return v / cov
    return jnp.linalg.solve(cov, v)


def gaussian_kl(mu_p, mu_q, cov):
    """``KL(N(mu_p, cov) || N(mu_q, cov))`` for a shared covariance.

    Args:
      mu_p, mu_q: means, ``[D]`` (or scalars for 1-D).
      cov: the shared covariance ``[D, D]``, or a scalar variance.

    Returns:
      ``0.5 (mu_p - mu_q)^T cov^{-1} (mu_p - mu_q)`` (symmetric in p and q).

    >>> float(gaussian_kl(0.0, 2.0, 1.0))
    2.0
    """
    d = jnp.asarray(mu_p, jnp.float32) - jnp.asarray(mu_q, jnp.float32)
    cov = jnp.asarray(cov, jnp.float32)
    if d.ndim == 0:
        return 0.5 * d * d / cov
    return 0.5 * jnp.dot(d, _solve(cov, d))


def gaussian_kl_general(mu_p, cov_p, mu_q, cov_q):
    """``KL(N(mu_p, cov_p) || N(mu_q, cov_q))`` for full covariances.

    ``0.5 [tr(Sq^-1 Sp) + (mq - mp)^T Sq^-1 (mq - mp) - D + log det Sq - log det Sp]``.

    >>> import jax.numpy as jnp
    >>> round(float(gaussian_kl_general(
    ...     jnp.zeros(1), jnp.eye(1), jnp.zeros(1), 4 * jnp.eye(1))), 4)
    0.3181
    """
    mu_p = jnp.atleast_1d(jnp.asarray(mu_p, jnp.float32))
    mu_q = jnp.atleast_1d(jnp.asarray(mu_q, jnp.float32))
    cov_p = jnp.atleast_2d(jnp.asarray(cov_p, jnp.float32))
    cov_q = jnp.atleast_2d(jnp.asarray(cov_q, jnp.float32))
    if cov_p.shape != cov_q.shape or cov_p.shape[0] != mu_p.shape[0]:
        raise ValueError(
            f"shape mismatch: mu_p {mu_p.shape}, cov_p {cov_p.shape},"
            f" mu_q {mu_q.shape}, cov_q {cov_q.shape}."
        )
    dim = mu_p.shape[0]
    d = mu_q - mu_p
    _, logdet_p = jnp.linalg.slogdet(cov_p)
    _, logdet_q = jnp.linalg.slogdet(cov_q)
    trace = jnp.trace(jnp.linalg.solve(cov_q, cov_p))
    return 0.5 * (
        trace + jnp.dot(d, jnp.linalg.solve(cov_q, d)) - dim + logdet_q - logdet_p
    )


def pareto_frontier(alpha, delta):
    """Least preservation KL ``eps*(alpha)`` for removal ``alpha`` (Prop. 1).

    ``0`` for ``alpha <= delta`` (the pair ``(delta, 0)`` dominates, reached by
    ``q = p2``) and ``(sqrt(alpha) - sqrt(delta))**2`` beyond, where
    ``delta = KL(p1 || p2)``. Elementwise; jit / vmap friendly.

    >>> [float(pareto_frontier(a, 1.0)) for a in (0.5, 1.0, 4.0)]
    [0.0, 0.0, 1.0]
    """
    check_nonnegative("alpha", alpha)
    check_nonnegative("delta", delta)
    alpha = jnp.asarray(alpha, jnp.float32)
    delta = jnp.asarray(delta, jnp.float32)
    gap = jnp.sqrt(alpha) - jnp.sqrt(delta)
    return jnp.where(alpha <= delta, 0.0, gap * gap)


def optimal_edit(mu1, mu2, cov, alpha):
    """Mean of the edited Gaussian ``q`` that attains the frontier at ``alpha``.

    ``q = N(m, cov)`` with ``m = mu1 + s (mu2 - mu1)``, ``s = max(1,
    sqrt(alpha / Delta))``: on the ray from ``mu1`` through ``mu2``, at
    Mahalanobis distance ``sqrt(2 alpha)`` from ``mu1`` (``m = mu2`` when
    ``alpha <= Delta``). Then ``gaussian_kl(mu1, m, cov) = max(alpha, Delta)``
    and ``gaussian_kl(mu2, m, cov) = pareto_frontier(alpha, Delta)``.

    >>> float(optimal_edit(0.0, 1.0, 1.0, 2.0))
    2.0
    """
    check_nonnegative("alpha", alpha)
    mu1 = jnp.asarray(mu1, jnp.float32)
    mu2 = jnp.asarray(mu2, jnp.float32)
    delta = gaussian_kl(mu1, mu2, cov)
    alpha = jnp.asarray(alpha, jnp.float32)
    # alpha <= delta (including mu1 == mu2, alpha = 0): q = p2. With mu1 ==
    # mu2 and alpha > 0 there is no direction to move in: the result is NaN.
    ratio = alpha / jnp.where(delta > 0, delta, jnp.nan)
    scale = jnp.where(alpha <= delta, 1.0, jnp.sqrt(ratio))
    return mu1 + scale * (mu2 - mu1)
