"""Entropic optimal transport between point clouds (through ott-jax).

References:
  Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport"
  (NeurIPS 2013).
  Feydy, Sejourne, Vialard, Amari, Trouve, Peyre, "Interpolating between
  Optimal Transport and MMD using Sinkhorn Divergences" (AISTATS 2019).
  Choi, Na, "Distribution-Level Feature Distancing for Machine Unlearning"
  (DLFD).
"""

import functools
import math
import operator

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.typing import ArrayLike

COSTS = ("cosine", "sqeuclidean")
KINDS = ("transport", "regularized", "divergence")

# Added to squared norms before the inverse square root of the cosine cost, so
# a zero vector has a finite value and a finite gradient (cosine 0 with all).
_NORM_EPS = 1e-12


def _unit(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + _NORM_EPS)


@functools.cache
def _ott():
    """ott-jax, imported on first use: importing it pulls in matplotlib and
    tqdm, which ``import jaxunlearn`` must not (docs/architecture.md)."""
    from ott.geometry import costs, pointcloud  # noqa: PLC0415
    from ott.problems.linear import linear_problem  # noqa: PLC0415
    from ott.solvers.linear import sinkhorn  # noqa: PLC0415

    @jtu.register_pytree_node_class
    class _Cost(costs.CostFn):
        """``1 - cos(x, y)`` or ``||x - y||^2``, optionally clamped at 0.

        ``all_pairs`` is overridden with a matrix product (the default vmaps the
        pairwise ``__call__``); both agree.
        """

        def __init__(self, name: str, clamp: bool):
            super().__init__()
            self.name = name
            self.clamp = clamp

        def _finish(self, c: jax.Array) -> jax.Array:
            return jnp.maximum(c, 0.0) if self.clamp else c

        def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
            return self.all_pairs(x[None], y[None])[0, 0]

        def all_pairs(self, x: jax.Array, y: jax.Array) -> jax.Array:
            if self.name == "cosine":
                xn = x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + _NORM_EPS)
                yn = y * jax.lax.rsqrt(jnp.sum(y * y, -1, keepdims=True) + _NORM_EPS)
                c = 1.0 - xn @ yn.T
            else:
                x2 = jnp.sum(x * x, -1)
                y2 = jnp.sum(y * y, -1)
                c = x2[:, None] + y2[None, :] - 2.0 * (x @ y.T)
            return self._finish(c)

        def tree_flatten(self):  # noqa: D102
            return (), (self.name, self.clamp)

        @classmethod
        def tree_unflatten(cls, aux_data, children):  # noqa: D102
            del children
            return cls(*aux_data)

    return _Cost, pointcloud, linear_problem, sinkhorn


def _check_mask(where, n: int, name: str) -> jax.Array | None:
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.shape != (n,):
        raise ValueError(
            f"{name} has shape {where.shape}, expected ({n},) (one per point)."
        )
    return where.astype(bool)


def _check_epsilon(epsilon) -> None:
    if isinstance(epsilon, jax.core.Tracer):
        return  # a traced epsilon cannot be checked on the host
    if isinstance(epsilon, bool | str) or np.ndim(epsilon) != 0:
        raise ValueError(f"epsilon must be a positive finite scalar, got {epsilon!r}.")
    value = float(epsilon)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"epsilon must be a positive finite scalar, got {epsilon!r}.")


def _weights(where: jax.Array | None, n: int, dtype) -> jax.Array:
    if where is None:
        return jnp.full((n,), 1.0 / n, dtype)
    w = where.astype(dtype)
    return w / jnp.maximum(jnp.sum(w), 1.0)


def _safe(points: jax.Array, where: jax.Array | None) -> jax.Array:
    # Masked rows become zeros: whatever they held (inf, nan, huge values)
    # never reaches a cost, and the where's gradient to them is exactly 0.
    if where is None:
        return points
    return jnp.where(where[:, None], points, 0.0)


def _solve(x, y, a, b, cost_fn, epsilon, solver):
    _, pointcloud, linear_problem, _ = _ott()
    geom = pointcloud.PointCloud(
        x, y, cost_fn=cost_fn, epsilon=epsilon, relative_epsilon=None, scale_cost=1.0
    )
    out = solver(linear_problem.LinearProblem(geom, a=a, b=b))
    plan = out.matrix
    # Diagnostics from the final plan; masked rows/columns are exactly 0 on
    # both sides so they add nothing.
    err = jnp.sum(jnp.abs(plan.sum(1) - a)) + jnp.sum(jnp.abs(plan.sum(0) - b))
    return out, plan, geom.cost_matrix, jax.lax.stop_gradient(err)


def sinkhorn_cost(
    x: ArrayLike,
    y: ArrayLike,
    *,
    epsilon: float = 0.01,
    cost: str = "cosine",
    iterations: int = 50,
    kind: str = "transport",
    where_x: ArrayLike | None = None,
    where_y: ArrayLike | None = None,
    clamp: bool = True,
    threshold: float = 1e-3,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Entropic optimal transport cost between two point clouds.

    Solves the entropic OT problem (Cuturi 2013) between the uniform
    distributions on the real points of ``x`` and ``y`` with ott-jax
    (``PointCloud`` -> ``LinearProblem`` -> ``Sinkhorn``, the construction the
    Monge-gap loss of ``ott.neural`` uses), and returns one of:

    * ``"transport"``: <P, C> = sum_ij P_ij C_ij for the Sinkhorn plan P
      (no entropy term), the quantity DLFD (Choi & Na) differentiates.
    * ``"regularized"``: ott's ``reg_ot_cost``, the entropic primal cost
      <P, C> + epsilon KL(P | a b^T) at the final potentials.
    * ``"divergence"``: the debiased Sinkhorn divergence (Feydy et al. 2019)
      S(x, y) = OT(x, y) - OT(x, x) / 2 - OT(y, y) / 2 of the regularized costs,
      three solves; it is 0 for identical clouds.

    Solver notes:

    * ``epsilon`` is absolute (ott's ``relative_epsilon=None`` with a float
      epsilon and ``scale_cost=1.0``), not a fraction of the mean cost.
      Cosine costs lie in [0, 2], so the default 0.01 is a sharp plan; scale
      it with the cost for ``"sqeuclidean"``.
    * Exactly ``iterations`` log-domain Sinkhorn iterations always run
      (``min_iterations == max_iterations``, which makes ott use a
      ``lax.scan`` with no early exit); ``threshold`` only decides the
      ``"converged"`` flag, and non-convergence never raises.
    * Gradients unroll the iterations (``implicit_diff=None``, and therefore
      ``use_danskin=False``): they are the exact derivatives of the returned
      value, converged or not, through both the plan and the cost matrix.
      All iterations form one block (``inner_iterations=iterations``): in
      ott-jax 0.6.0 the checkpointed backward pass of the fixed-length loop
      walks several blocks in the wrong order (from block 0, then wrapping to
      an unwritten checkpoint), which gives wrong gradients; with one block it
      is exact. The price is that reverse mode keeps ``iterations`` steps of
      ``[n, m]`` residuals (about 40 MB for 50 iterations at n = m = 256).
    * Masked points carry no mass: the weights are a_i = where_x_i /
      sum(where_x) (b likewise). A masked point's potential is -inf, so it
      adds nothing to any update and the value equals the value on the
      unpadded clouds; its rows are replaced by zeros before any cost, so
      garbage there (inf, nan) cannot leak, and its gradient is exactly 0.
      At least one point of each cloud must be real.
    * ``"cosine"`` is C_ij = 1 - <x_i, y_j> / (|x_i| |y_j|), with a 1e-12 added
      under each squared norm so zero vectors stay finite (their cosine is 0).
      ``clamp`` applies max(0, C) to either cost, as the DLFD reference does;
      it only changes entries that rounding pushed below 0.

    Args:
      x: ``[n, d]`` points.
      y: ``[m, d]`` points.
      epsilon: entropic regularization, absolute, > 0.
      cost: ``"cosine"`` or ``"sqeuclidean"``.
      iterations: number of Sinkhorn iterations (int >= 1), always all run.
      kind: ``"transport"``, ``"regularized"`` or ``"divergence"``.
      where_x: optional ``[n]`` bool mask of real points of ``x``.
      where_y: optional ``[m]`` bool mask of real points of ``y``.
      clamp: clamp the cost matrix at 0.
      threshold: L1 marginal error below which ``"converged"`` is 1.

    Returns:
      ``(value, diagnostics)``: a scalar, and a dict of float32 scalars
      ``"converged"`` (1.0 if the final L1 marginal error is below
      ``threshold``, else 0.0), ``"iterations"`` (iterations run per solve)
      and ``"marginal_error"`` (sum_i |P 1 - a|_i + sum_j |P^T 1 - b|_j; for
      ``"divergence"`` the largest over the three solves, and ``"converged"``
      needs all three).

    Raises:
      ValueError: ``x``/``y`` not rank 2 or with different feature sizes, a
        mask of the wrong shape, ``epsilon`` not positive and finite,
        ``iterations`` < 1, or an unknown ``cost``/``kind``.
      TypeError: ``iterations`` not an int.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> value, info = sinkhorn_cost(x, x[::-1], epsilon=1e-3, iterations=100)
      >>> round(float(value), 4)  # each point is matched to its copy
      0.0
      >>> value, _ = sinkhorn_cost(x, -x, iterations=100)  # orthogonal pairs
      >>> round(float(value), 4)
      1.0
      >>> float(info["converged"]), float(info["iterations"])
      (1.0, 100.0)
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be [n, d] and [m, d] with the same d, got x {x.shape}"
            f" and y {y.shape}."
        )
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}.")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    _check_epsilon(epsilon)
    if isinstance(iterations, bool):
        raise TypeError(f"iterations must be an int, got {iterations!r}.")
    try:
        iterations = operator.index(iterations)
    except TypeError:
        raise TypeError(f"iterations must be an int, got {iterations!r}.") from None
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    where_x = _check_mask(where_x, x.shape[0], "where_x")
    where_y = _check_mask(where_y, y.shape[0], "where_y")

    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x = _safe(x.astype(dtype), where_x)
    y = _safe(y.astype(dtype), where_y)
    a = _weights(where_x, x.shape[0], dtype)
    b = _weights(where_y, y.shape[0], dtype)
    cost_cls, _, _, sinkhorn = _ott()
    cost_fn = cost_cls(cost, bool(clamp))
    solver = sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=threshold,
        min_iterations=iterations,
        max_iterations=iterations,
        inner_iterations=iterations,
        implicit_diff=None,
    )

    out, plan, cmat, err = _solve(x, y, a, b, cost_fn, epsilon, solver)
    if kind == "transport":
        value = jnp.sum(plan * cmat)
    elif kind == "regularized":
        value = out.reg_ot_cost
    else:
        out_xx, _, _, err_xx = _solve(x, x, a, a, cost_fn, epsilon, solver)
        out_yy, _, _, err_yy = _solve(y, y, b, b, cost_fn, epsilon, solver)
        value = out.reg_ot_cost - 0.5 * (out_xx.reg_ot_cost + out_yy.reg_ot_cost)
        err = jnp.maximum(err, jnp.maximum(err_xx, err_yy))

    err = jnp.where(jnp.isnan(err), jnp.inf, err).astype(jnp.float32)
    info = {
        "converged": (err < threshold).astype(jnp.float32),
        "iterations": jnp.asarray(iterations, jnp.float32),
        "marginal_error": err,
    }
    return value, info
