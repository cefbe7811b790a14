"""Finite-sample guarantees for random and selective removal (Thms 1-2).

Setting (paper Sec. 3, univariate, variance ``sigma^2`` known): ``n1`` samples
from ``p1 = N(mu1, sigma^2)``, ``n2`` from ``p2 = N(mu2, sigma^2)``; ``f`` of the
``p1`` samples are deleted and ``q = N(mu_hat, sigma^2)`` is refit by maximum
likelihood on what is left, ``mu_hat = w xbar1' + (1 - w) xbar2`` with ``w =
(n1 - f) / (n1 - f + n2)``. ``Delta = (mu1 - mu2)^2 / (2 sigma^2)``.

The paper's formulas were lost in extraction; the constants below are derived
here (docs/methods_notes.md, "Removal bounds"; checked by simulation in the
tests):

* random removal: ``mu_hat - mu2 = w (mu1 - mu2) + w (xbar1' - mu1) + (1 - w)
  (xbar2 - mu2)``; two Gaussian tail bounds at ``delta / 2`` each and
  ``(a + b + c)^2 <= 3 (a^2 + b^2 + c^2)`` give
  ``eps <= 3 w^2 Delta + 3 w^2 L / (n1 - f) + 3 (1 - w)^2 L / n2`` and
  ``sqrt(alpha) >= (1 - w) sqrt(Delta) - w sqrt(L / (n1 - f)) - (1 - w)
  sqrt(L / n2)``, with ``L = ln(4 / delta)``.
* selective removal (delete the ``f`` samples farthest from ``xbar2``): every
  kept sample is within ``t`` of ``xbar2`` (``t`` the ``(n1 - f)``-th smallest
  score), so ``|mu_hat - mu2| <= w t + e``, ``e = |xbar2 - mu2|``, and ``t <=
  t* + e`` with ``t*`` the same order statistic of ``|x - mu2|``, which is
  folded-normal (location ``d = |mu1 - mu2|``, scale ``sigma``). DKW at
  ``delta / 2`` bounds ``t* <= G^{-1}(u + eta)``, ``u = (n1 - f) / n1``,
  ``eta = sqrt(ln(4 / delta) / (2 n1))``, and a tail bound at ``delta / 2``
  gives ``e <= sigma sqrt(2 L / n2)``. Hence ``eps <= (w G^{-1}(u + eta) +
  (1 + w) e_max)^2 / (2 sigma^2)`` and ``sqrt(2 sigma^2 alpha) >= d - w
  G^{-1}(u + eta) - (1 + w) e_max``. (The ``(1 + w)`` factor on ``e_max`` is
  needed because the scores use ``xbar2``, not ``mu2``.)
  When ``u + eta >= 1`` the quantile is infinite and the bound is vacuous
  (``eps = inf``, ``alpha = 0``).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from jaxunlearn.select._checks import concrete


def _check_sizes(n1, n2, deleted, delta_prob):
    for name, v in (("n1", n1), ("n2", n2), ("deleted", deleted)):
        c = concrete(v)
        if c is not None and np.any(c < 0):
            raise ValueError(f"{name} must be >= 0, got {c}.")
    c1, c2, cf = concrete(n1), concrete(n2), concrete(deleted)
    if c2 is not None and np.any(c2 < 1):
        raise ValueError(f"n2 must be >= 1, got {c2}.")
    if c1 is not None and cf is not None and np.any(cf > c1):
        raise ValueError(f"deleted ({cf}) cannot exceed n1 ({c1}).")
    d = concrete(delta_prob)
    if d is not None and np.any((d <= 0) | (d >= 1)):
        raise ValueError(f"delta must be in (0, 1), got {d}.")


def folded_normal_cdf(t, loc, scale):
    """CDF of ``|X|``, ``X ~ N(loc, scale^2)``: ``Phi((t-d)/s) + Phi((t+d)/s) - 1``."""
    t = jnp.maximum(jnp.asarray(t, jnp.float32), 0.0)
    return ndtr((t - loc) / scale) + ndtr((t + loc) / scale) - 1.0


def folded_normal_quantile(u, loc, scale, *, steps: int = 80):
    """Inverse of :func:`folded_normal_cdf` by bisection (``inf`` for ``u >= 1``).

    >>> round(float(folded_normal_quantile(0.5, 0.0, 1.0)), 4)  # Phi^-1(0.75)
    0.6745
    """
    u = jnp.asarray(u, jnp.float32)
    loc = jnp.abs(jnp.asarray(loc, jnp.float32))
    scale = jnp.asarray(scale, jnp.float32)
    shape = jnp.broadcast_shapes(u.shape, loc.shape, scale.shape)
    u, loc, scale = (jnp.broadcast_to(v, shape) for v in (u, loc, scale))
    hi0 = loc + 40.0 * scale

    def body(_, carry):
        lo, hi = carry
        mid = 0.5 * (lo + hi)
        below = folded_normal_cdf(mid, loc, scale) < u
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, steps, body, (jnp.zeros_like(hi0), hi0))
    return jnp.where(u >= 1.0, jnp.inf, jnp.where(u <= 0.0, 0.0, hi))


def kept_weight(n1, n2, deleted):
    """``w = (n1 - f) / (n1 - f + n2)``, the kept forget samples' pooled weight."""
    kept = jnp.asarray(n1, jnp.float32) - jnp.asarray(deleted, jnp.float32)
    return kept / (kept + jnp.asarray(n2, jnp.float32))


def random_removal_bound(mu1, mu2, sigma, n1, n2, deleted, delta=0.05):
    """``(alpha, eps)`` that random removal achieves with probability ``1 - delta``.

    Returns ``alpha`` (a lower bound on ``KL(p1 || q)``) and ``eps`` (an upper
    bound on ``KL(p2 || q)``) for the refit ``q`` (Theorem 1; constants in the
    module docstring). Elementwise in ``deleted``; jit / vmap friendly.

    >>> a, e = random_removal_bound(0.0, 1.0, 1.0, 1000, 1000, 1000)
    >>> round(float(a), 3), round(float(e), 4)  # all deleted: q fit on p2 only
    (0.411, 0.0131)
    """
    _check_sizes(n1, n2, deleted, delta)
    sigma = jnp.asarray(sigma, jnp.float32)
    div = (jnp.asarray(mu1, jnp.float32) - jnp.asarray(mu2, jnp.float32)) ** 2 / (
        2 * sigma**2
    )
    w = kept_weight(n1, n2, deleted)
    kept = jnp.asarray(n1, jnp.float32) - jnp.asarray(deleted, jnp.float32)
    log_term = jnp.log(4.0 / delta)
    kept_term = jnp.where(kept > 0, log_term / jnp.maximum(kept, 1.0), 0.0)
    n2 = jnp.asarray(n2, jnp.float32)
    eps = 3 * w**2 * div + 3 * w**2 * kept_term + 3 * (1 - w) ** 2 * log_term / n2
    root = (
        (1 - w) * jnp.sqrt(div)
        - w * jnp.sqrt(kept_term)
        - (1 - w) * jnp.sqrt(log_term / n2)
    )
    return jnp.maximum(root, 0.0) ** 2, eps


def selective_removal_bound(mu1, mu2, sigma, n1, n2, deleted, delta=0.05):
    """``(alpha, eps)`` that selective removal achieves w.p. ``1 - delta`` (Thm 2).

    Selective removal deletes the ``deleted`` forget samples with the largest
    ``|x - xbar2|``. Vacuous (``alpha = 0``, ``eps = inf``) while ``(n1 - f) /
    n1 + sqrt(ln(4 / delta) / (2 n1)) >= 1``, i.e. for small deletions.

    >>> a, e = selective_removal_bound(0.0, 0.1, 1.0, 10000, 10000, 9000)
    >>> bool(e < random_removal_bound(0.0, 0.1, 1.0, 10000, 10000, 9000)[1])
    True
    """
    _check_sizes(n1, n2, deleted, delta)
    sigma = jnp.asarray(sigma, jnp.float32)
    dist = jnp.abs(jnp.asarray(mu1, jnp.float32) - jnp.asarray(mu2, jnp.float32))
    n1f = jnp.asarray(n1, jnp.float32)
    n2f = jnp.asarray(n2, jnp.float32)
    w = kept_weight(n1, n2, deleted)
    log_term = jnp.log(4.0 / delta)
    u = (n1f - jnp.asarray(deleted, jnp.float32)) / n1f
    eta = jnp.sqrt(log_term / (2 * n1f))
    quant = folded_normal_quantile(u + eta, dist, sigma)
    # A fully deleted forget set leaves w = 0: the quantile no longer matters.
    spread = jnp.where(w > 0, w * quant, 0.0)
    e_max = sigma * jnp.sqrt(2 * log_term / n2f)
    shift = spread + (1 + w) * e_max
    eps = shift**2 / (2 * sigma**2)
    alpha = jnp.maximum(dist - shift, 0.0) ** 2 / (2 * sigma**2)
    return alpha, eps


def simulate_removal(key, mu1, mu2, sigma, n1, n2, deleted, *, selective: bool):
    """One draw of the removal experiment: returns the refit's ``(alpha, eps)``.

    Draws ``n1`` / ``n2`` samples, deletes ``deleted`` forget samples (uniformly
    at random, or the ones farthest from the retain mean when ``selective``),
    refits the mean with ``sigma`` known and returns ``(KL(p1 || q),
    KL(p2 || q))`` against the TRUE ``p1``, ``p2``. ``n1`` / ``n2`` must be
    static; ``deleted`` may be traced (vmap it over budgets, ``key`` over
    seeds).
    """
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = mu1 + sigma * jax.random.normal(k1, (n1,))
    x2 = mu2 + sigma * jax.random.normal(k2, (n2,))
    xbar2 = jnp.mean(x2)
    scores = jnp.abs(x1 - xbar2) if selective else jax.random.uniform(k3, (n1,))
    rank = jnp.zeros(n1, jnp.int32).at[jnp.argsort(-scores)].set(jnp.arange(n1))
    keep = rank >= deleted
    total = jnp.sum(jnp.where(keep, x1, 0.0)) + jnp.sum(x2)
    mean = total / (jnp.sum(keep) + n2)
    two_var = 2 * sigma**2
    return (mu1 - mean) ** 2 / two_var, (mu2 - mean) ** 2 / two_var
