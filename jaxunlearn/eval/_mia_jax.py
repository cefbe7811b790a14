"""A traceable loss-based membership attack: DLFD's forgetting score inside ``jit``.

:func:`mia_logreg` fits scikit-learn on the host, which cannot run inside a
compiled training step. DLFD's dynamic forgetting needs the score after every
batch, so this module fits the same attacker (L2-regularised logistic
regression with ``C = 1`` on one standardised feature, the per-example loss)
with a fixed number of Newton steps in ``jnp``, cross-fitted over a fixed
number of folds.
"""

import numbers

import jax
import jax.numpy as jnp


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    return int(value)


def _fit_predict(x, y, w_train, w_test, iterations, l2):
    """Fits ``sigmoid(a * z + b)`` on the weighted training rows (``z`` the
    standardised feature) by Newton's method; returns the weighted accuracy
    on the test rows and the number of test rows."""
    n_tr = jnp.maximum(w_train.sum(), 1.0)
    top = jnp.max(jnp.where(w_train > 0, jnp.abs(x), 0.0))
    top = jnp.where(top > 0, top, 1.0)
    xs = x / top
    mean = (w_train * xs).sum() / n_tr
    std = jnp.sqrt((w_train * (xs - mean) ** 2).sum() / n_tr)
    std = jnp.where(std > 0, std, 1.0)
    z = (xs - mean) / std

    def newton(_, ab):
        a, b = ab
        p = jax.nn.sigmoid(a * z + b)
        r = w_train * (p - y)
        s = w_train * p * (1.0 - p)
        # Gradient and Hessian of sum_i w_i * logloss_i + l2 / 2 * a^2
        # (scikit-learn's objective with C = 1 / l2; the intercept is free).
        ga = (r * z).sum() + l2 * a
        gb = r.sum()
        haa = (s * z * z).sum() + l2
        hab = (s * z).sum()
        hbb = s.sum() + 1e-12
        det = haa * hbb - hab * hab
        det = jnp.where(det > 0, det, 1e-12)
        da = (hbb * ga - hab * gb) / det
        db = (haa * gb - hab * ga) / det
        return a - da, b - db

    a, b = jax.lax.fori_loop(0, iterations, newton, (0.0, 0.0))
    pred = (a * z + b) > 0
    correct = (pred == (y > 0.5)).astype(x.dtype)
    return (w_test * correct).sum(), w_test.sum()


def loss_mia_accuracy(
    member_losses: jax.Array,
    nonmember_losses: jax.Array,
    *,
    where_member: jax.Array | None = None,
    where_nonmember: jax.Array | None = None,
    folds: int = 2,
    iterations: int = 20,
    l2: float = 1.0,
) -> jax.Array:
    """Cross-fitted accuracy of a logistic-regression membership attacker.

    The attacker sees one feature per example (e.g. the per-example loss):
    members (label 1, e.g. the forget set) against non-members (label 0,
    unseen data). The ``i``-th real example of each side falls in fold
    ``i mod folds`` (padded slots are skipped);
    for each fold an L2-regularised logistic regression (``C = 1 / l2``, as
    scikit-learn's default ``LogisticRegression`` with ``l2 = 1``) is fitted
    on the other folds by ``iterations`` Newton steps on the standardised
    feature and scored on the fold. Everything is ``jnp`` with static loop
    bounds, so it runs inside ``jit`` / ``vmap`` (DLFD's dynamic forgetting
    evaluates it after every batch). :func:`mia_logreg` is the host-side
    attack used for reporting (10 shuffle splits, size balancing).

    Args:
      member_losses: ``[n]`` finite features of members.
      nonmember_losses: ``[m]`` finite features of non-members.
      where_member: optional bool ``[n]``: real members (padding is ignored).
      where_nonmember: optional bool ``[m]``: real non-members.
      folds: number of folds (>= 2).
      iterations: Newton steps per fit (>= 1).
      l2: L2 penalty on the slope (>= 0; 1 is scikit-learn's default).

    Returns:
      The attack accuracy, a float32 scalar in [0, 1] (0.5: chance when the
      sides have equal size). ``eval.forgetting_score`` of it is DLFD's
      (doubled) forgetting score.

    Raises:
      ValueError / TypeError: wrong ranks, mask shapes, ``folds`` < 2,
        ``iterations`` < 1 or a negative ``l2``.

    Examples:
      >>> import jax.numpy as jnp
      >>> members = jnp.linspace(0.0, 1.0, 50)
      >>> nonmembers = jnp.linspace(2.0, 3.0, 50)
      >>> float(loss_mia_accuracy(members, nonmembers))
      1.0
    """
    folds = _check_int("folds", folds, 2)
    iterations = _check_int("iterations", iterations, 1)
    if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or not l2 >= 0:
        raise ValueError(f"`l2` must be a real number >= 0, got {l2!r}.")
    xm = jnp.asarray(member_losses, jnp.float32)
    xn = jnp.asarray(nonmember_losses, jnp.float32)
    for name, x in (("member_losses", xm), ("nonmember_losses", xn)):
        if x.ndim != 1:
            raise ValueError(f"`{name}` must be 1-D, got shape {x.shape}.")
    wm = jnp.ones(xm.shape, bool) if where_member is None else where_member
    wn = jnp.ones(xn.shape, bool) if where_nonmember is None else where_nonmember
    for name, w, x in (("where_member", wm, xm), ("where_nonmember", wn, xn)):
        if jnp.shape(w) != x.shape:
            raise ValueError(f"`{name}` must have shape {x.shape}, got {jnp.shape(w)}.")
    x = jnp.concatenate([xm, xn])
    y = jnp.concatenate([jnp.ones(xm.shape), jnp.zeros(xn.shape)])
    real = jnp.concatenate([jnp.asarray(wm), jnp.asarray(wn)]).astype(jnp.float32)
    x = jnp.where(real > 0, x, 0.0)
    # The i-th REAL example of each side falls in fold i mod folds, wherever
    # the padded slots are.
    rank = jnp.concatenate(
        [jnp.cumsum(jnp.asarray(wm, jnp.int32)), jnp.cumsum(jnp.asarray(wn, jnp.int32))]
    )
    fold = (rank - 1) % folds
    correct, total = 0.0, 0.0
    for f in range(folds):
        test = real * (fold == f)
        c, t = _fit_predict(x, y, real - test, test, iterations, float(l2))
        correct, total = correct + c, total + t
    return (correct / jnp.maximum(total, 1.0)).astype(jnp.float32)
