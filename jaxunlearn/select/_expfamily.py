"""The removal / preservation frontier for a regular exponential family (Prop. 3).

A family ``p_theta(x) = h(x) exp(<theta, T(x)> - A(theta))`` is given by its
log-partition ``A``; its mean map is ``grad A``. KL is the Bregman divergence
of ``A``: ``KL(p_a || p_b) = A(b) - A(a) - <grad A(a), b - a>``.

Minimising ``KL(p2 || q)`` subject to ``KL(p1 || q) >= alpha`` (for ``alpha >
Delta = KL(p1 || p2)``): stationarity of the Lagrangian gives ``mu_q - mu2 =
lam (mu_q - mu1)`` in mean parameters, i.e. ``mu_q = mu2 + t (mu2 - mu1)``
with ``t = lam / (1 - lam) >= 0`` -- the optimal ``q`` lies on the ray from
``mu1`` through ``mu2``, beyond ``mu2`` -- and the removal constraint is
active, so ``t`` solves ``KL(p1 || q_t) = alpha``. ``KL(p1 || q_t)`` is the
conjugate Bregman divergence ``D_{A*}(mu1, mu_q)``, increasing in ``t``, so a
bracketing bisection finds ``t``. For a Gaussian with known variance this is
exactly :func:`pareto_frontier`.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxunlearn.select._checks import check_nonnegative


@dataclasses.dataclass(frozen=True)
class ExpFamily:
    """A regular minimal exponential family.

    Attributes:
      name: a label.
      log_partition: ``A(theta)`` for a natural parameter ``theta`` (``[D]``).
      mean_to_natural: the inverse mean map ``(grad A)^{-1}``; when None it is
        solved by damped Newton iterations on ``grad A(theta) = mu``.
      in_domain: True where a mean parameter is inside the mean space (a
        point outside counts as infinitely far in the bracketing search).
    """

    name: str
    log_partition: Callable[[jax.Array], jax.Array]
    mean_to_natural: Callable[[jax.Array], jax.Array] | None = None
    in_domain: Callable[[jax.Array], jax.Array] = lambda mu: jnp.all(jnp.isfinite(mu))

    def mean(self, theta):
        return jax.grad(lambda t: self.log_partition(t))(theta)

    def natural(self, mu, *, init=None, iterations: int = 60):
        if self.mean_to_natural is not None:
            return self.mean_to_natural(mu)
        theta = jnp.zeros_like(mu) if init is None else init

        def body(_, th):
            grad = self.mean(th) - mu
            hess = jax.hessian(self.log_partition)(th)
            step = jnp.linalg.solve(hess, grad)
            # Damping keeps Newton from overshooting on steep A (e.g. exp).
            return th - jnp.clip(step, -2.0, 2.0)

        return jax.lax.fori_loop(0, iterations, body, theta)

    def kl(self, theta_a, theta_b):
        """``KL(p_{theta_a} || p_{theta_b})``."""
        mean_a = self.mean(theta_a)
        return (
            self.log_partition(theta_b)
            - self.log_partition(theta_a)
            - jnp.dot(mean_a, theta_b - theta_a)
        )


def _vec(x):
    return jnp.atleast_1d(jnp.asarray(x, jnp.float32))


def bernoulli() -> ExpFamily:
    """Bernoulli: ``theta = logit(p)``, ``A = log(1 + e^theta)``, mean ``p``."""
    return ExpFamily(
        "bernoulli",
        lambda t: jnp.sum(jax.nn.softplus(t)),
        lambda mu: jnp.log(mu) - jnp.log1p(-mu),
        lambda mu: jnp.all((mu > 0) & (mu < 1)),
    )


def poisson() -> ExpFamily:
    """Poisson: ``theta = log(rate)``, ``A = e^theta``, mean ``rate``."""
    return ExpFamily(
        "poisson",
        lambda t: jnp.sum(jnp.exp(t)),
        jnp.log,
        lambda mu: jnp.all(mu > 0),
    )


def gaussian_known_variance(variance: float = 1.0) -> ExpFamily:
    """``N(m, variance I)``: ``theta = m / variance``, ``A = var |theta|^2 / 2``."""
    return ExpFamily(
        f"gaussian(var={variance})",
        lambda t: 0.5 * variance * jnp.sum(t * t),
        lambda mu: mu / variance,
    )


def exp_family_frontier(
    family: ExpFamily,
    theta1,
    theta2,
    alpha,
    *,
    bracket_steps: int = 64,
    bisection_steps: int = 100,
):
    """Least preservation KL for removal ``alpha`` within ``family`` (Prop. 3).

    Args:
      family: an :class:`ExpFamily`.
      theta1, theta2: natural parameters of ``p1`` (forget) and ``p2`` (keep).
      alpha: removal level ``KL(p1 || q)`` to reach (scalar; vmap for a curve).
      bracket_steps, bisection_steps: iterations of the doubling search for an
        upper bracket of ``t`` and of the bisection.

    Returns:
      ``(eps, theta_q, t)``: ``eps = KL(p2 || q)`` at the optimum, the optimal
      natural parameter and the ray position ``t`` (``mu_q = mu2 + t (mu2 -
      mu1)``; ``t = 0`` and ``eps = 0`` when ``alpha <= KL(p1 || p2)``). If
      ``alpha`` exceeds every removal level the mean space allows, ``eps`` is
      ``inf``.

    >>> fam = bernoulli()
    >>> eps, theta, t = exp_family_frontier(
    ...     fam, fam.natural(jnp.array([0.3])), fam.natural(jnp.array([0.5])), 0.5)
    >>> bool(eps > 0) and bool(t > 0)
    True
    """
    check_nonnegative("alpha", alpha)
    theta1 = _vec(theta1)
    theta2 = _vec(theta2)
    if theta1.shape != theta2.shape:
        raise ValueError(
            f"theta1 {theta1.shape} and theta2 {theta2.shape} differ in shape."
        )
    alpha = jnp.asarray(alpha, jnp.float32)
    mu1 = family.mean(theta1)
    mu2 = family.mean(theta2)
    delta = family.kl(theta1, theta2)

    def removal(t):
        mu = mu2 + t * (mu2 - mu1)
        ok = family.in_domain(mu)
        safe = jnp.where(ok, mu, mu2)
        theta = family.natural(safe, init=theta2)
        value = family.kl(theta1, theta)
        return jnp.where(ok & jnp.isfinite(value), value, jnp.inf), theta

    def too_far(t):
        return removal(t)[0] >= alpha

    # Doubling search for an upper bracket; the lower bracket stays feasible.
    def grow(_, carry):
        lo, hi = carry
        far = too_far(hi)
        return jnp.where(far, lo, hi), jnp.where(far, hi, 2.0 * hi)

    lo, hi = jax.lax.fori_loop(
        0, bracket_steps, grow, (jnp.float32(0.0), jnp.float32(1.0))
    )
    reachable = too_far(hi)

    def bisect(_, carry):
        lo, hi = carry
        mid = 0.5 * (lo + hi)
        far = too_far(mid)
        return jnp.where(far, lo, mid), jnp.where(far, mid, hi)

    lo, hi = jax.lax.fori_loop(0, bisection_steps, bisect, (lo, hi))
    # hi always satisfies the constraint; in floating point it is the answer.
    t = jnp.where(alpha <= delta, 0.0, hi)
    value, theta_q = removal(t)
    # The bracket end must itself be a representable in-domain point that
    # reaches alpha; otherwise (alpha beyond what the mean space / float32
    # allows) the answer is inf, never the p2 fallback used inside removal().
    reachable = reachable & jnp.isfinite(value)
    theta_q = jnp.where(alpha <= delta, theta2, theta_q)
    eps = family.kl(theta2, theta_q)
    eps = jnp.where(alpha <= delta, 0.0, jnp.where(reachable, eps, jnp.inf))
    return eps, theta_q, t
