"""Scalar unlearning metrics (forgetting score, NoMUS, UTV) and logit confidence.

``forgetting_score``, ``nomus`` and ``utv`` take plain numbers / numpy arrays and
return Python floats. ``logit_confidence`` and ``logit_confidence_from_probs`` are
``jax.numpy`` functions that work under ``jax.jit`` and ``jax.vmap``; their value
checks (finiteness, label range) run only on concrete inputs, shape checks always.
A concrete input (e.g. labels closed over by a jitted function) is checked with
numpy on the host: ``jnp`` operations on it inside a trace would be staged and
could not be turned into a Python ``bool``.
"""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _unit_scalar(x, name: str) -> float:
    """A real number in [0, 1] (Python, numpy or 0-d array)."""
    if isinstance(x, bool) or not (
        isinstance(x, numbers.Real) or (hasattr(x, "shape") and x.shape == ())
    ):
        raise TypeError(f"{name} must be a real scalar, got {type(x).__name__}.")
    value = float(x)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a finite number in [0, 1], got {value}.")
    return value


def forgetting_score(mia_accuracy) -> float:
    """DLFD forgetting score ``FS = 2 * |mia_accuracy - 0.5|`` (paper Eq. 6).

    0 means the membership attacker is at chance (ideal after unlearning), 1 means
    it is perfectly right (or perfectly wrong). Note: the DLFD code
    (``Dasol-Choi/DLFD:evaluation/mia.py``) and the paper's tables report the
    *un-doubled* ``|acc - 0.5|``; their NoMUS column nevertheless uses the doubled
    value, which is what this function returns, so ``nomus(acc, fs)`` with this
    ``fs`` reproduces the tables. Divide by 2 to compare with a table's FS column.

    Args:
      mia_accuracy: membership-attack accuracy in [0, 1] (e.g. ``mia_logreg``'s
        ``"accuracy"``).

    Returns:
      The forgetting score in [0, 1]; lower is better.

    Examples:
      >>> forgetting_score(0.6923)  # DLFD Table 1 original age model: 2 * 0.1923
      0.3846
      >>> forgetting_score(0.5)
      0.0
    """
    return 2.0 * abs(_unit_scalar(mia_accuracy, "mia_accuracy") - 0.5)


def nomus(test_accuracy, forgetting_score) -> float:
    """DLFD's Normalized Machine Unlearning Score ``(acc + 1 - FS) / 2``.

    ``forgetting_score`` is the doubled score of :func:`forgetting_score`
    (``2 * |mia_acc - 0.5|``); with a DLFD table's un-doubled FS column pass
    ``2 * FS``.

    Args:
      test_accuracy: test accuracy of the unlearned model in [0, 1].
      forgetting_score: doubled forgetting score in [0, 1].

    Returns:
      NoMUS in [0, 1]; higher is better (1 = perfect accuracy and a chance-level
      attacker).

    Examples:
      >>> nomus(0.6329, 2 * 0.1923)  # DLFD Table 1, original age model
      0.6241
    """
    acc = _unit_scalar(test_accuracy, "test_accuracy")
    fs = _unit_scalar(forgetting_score, "forgetting_score")
    return (acc + 1.0 - fs) / 2.0


def _prob_matrix(p, name: str, atol: float) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty [n, C] array, got shape {p.shape}."
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains non-finite values.")
    if np.any(p < -atol):
        raise ValueError(f"{name} has negative entries (min {p.min():.3g}).")
    err = np.abs(p.sum(axis=1) - 1.0).max()
    if err > atol:
        raise ValueError(
            f"{name} rows must be probability vectors summing to 1 (within "
            f"atol={atol}); the worst row is off by {err:.3g}."
        )
    return p


def utv(p_retrained, p_unlearned, *, atol: float = 1e-3) -> float:
    """Unlearning total variation (RWFT): mean TV distance to the retrained model.

    ``UTV = mean_x 0.5 * sum_y |p_r(y|x) - p_u(y|x)|`` over the rows (usually the
    forget set), where ``p_r`` are the retrained model's softmax outputs and
    ``p_u`` the unlearned model's.

    Args:
      p_retrained: ``[n, C]`` probabilities of the retrained (oracle) model.
      p_unlearned: ``[n, C]`` probabilities of the unlearned model.
      atol: tolerance on negative entries and on row sums differing from 1.

    Returns:
      UTV in [0, 1]; 0 (identical predictive distributions) is ideal.

    Raises:
      ValueError: if shapes differ, arrays are not 2-D / non-empty, contain
        non-finite values, or rows are not probability vectors.

    Examples:
      >>> import numpy as np
      >>> utv(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
      0.5
    """
    p = _prob_matrix(p_retrained, "p_retrained", atol)
    q = _prob_matrix(p_unlearned, "p_unlearned", atol)
    if p.shape != q.shape:
        raise ValueError(
            f"p_retrained has shape {p.shape} but p_unlearned has shape {q.shape}."
        )
    return float(np.mean(0.5 * np.abs(p - q).sum(axis=1)))


def _host(x) -> np.ndarray | None:
    """A numpy copy of a concrete array, ``None`` for a tracer.

    Value checks must use this rather than ``jnp`` operations: inside a
    ``jax.jit`` trace, ``jnp.all(concrete)`` returns a tracer, even when its
    input is a closed-over concrete array.
    """
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _check_labels(x: jax.Array, labels: jax.Array, x_name: str) -> None:
    if x.ndim < 1:
        raise ValueError(f"{x_name} must be [..., C], got shape {x.shape}.")
    if x.shape[-1] < 2:
        raise ValueError(f"{x_name} needs at least 2 classes, got shape {x.shape}.")
    if labels.shape != x.shape[:-1]:
        raise ValueError(
            f"labels has shape {labels.shape}, expected {x.shape[:-1]} to match "
            f"{x_name} of shape {x.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
    host = _host(labels)
    if host is not None and host.size:
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= x.shape[-1]:
            raise ValueError(
                f"labels must lie in [0, {x.shape[-1]}), got range [{lo}, {hi}]."
            )


def _float(x: jax.Array, name: str) -> jax.Array:
    if not (
        jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
    ):
        raise TypeError(f"{name} must be a real array, got dtype {x.dtype}.")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def logit_confidence(logits, labels) -> jax.Array:
    """Logit-scaled true-class confidence ``phi = log p_y - log(1 - p_y)``.

    The LiRA / U-LiRA score (Carlini et al. 2022) and the feature of the
    Blend/A-AMU attack, computed from logits without forming probabilities:
    ``log p_y - log(1 - p_y) = z_y - logsumexp_{j != y} z_j`` (the ``logsumexp(z)``
    terms cancel), so it stays finite even where ``p_y`` rounds to exactly 0 or 1
    in float32 (e.g. logits ``[100, -100]`` give ``phi = +-200``). Works on any
    leading batch shape, under ``jax.jit`` and ``jax.vmap``.

    Args:
      logits: ``[..., C]`` logits, ``C >= 2``. Computed in at least float32.
      labels: ``[...]`` integer labels in ``[0, C)``.

    Returns:
      ``[...]`` phi; higher = more confident in the true label (more member-like
      for a membership attack).

    Raises:
      ValueError: on shape mismatch, fewer than 2 classes, or (for concrete
        inputs) non-finite logits / out-of-range labels.
      TypeError: if labels are not integers.

    Examples:
      >>> import jax.numpy as jnp
      >>> phi = logit_confidence(jnp.array([[100.0, -100.0]] * 2), jnp.array([0, 1]))
      >>> phi.tolist()
      [200.0, -200.0]
    """
    logits = jnp.asarray(logits)
    host = _host(logits)  # before the cast, which a trace would stage
    z = _float(logits, "logits")
    labels = jnp.asarray(labels)
    _check_labels(z, labels, "logits")
    if host is not None and not np.all(np.isfinite(host)):
        raise ValueError("logits contains non-finite values.")
    onehot = jnp.arange(z.shape[-1]) == labels[..., None]
    z_y = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1)
    z_rest = jax.nn.logsumexp(z, axis=-1, where=~onehot)
    return z_y - z_rest


def logit_confidence_from_probs(probs, labels, *, eps: float = 1e-30) -> jax.Array:
    """``phi = log p_y - log(sum_{j != y} p_j)`` from stored probabilities.

    For pipelines that kept softmax outputs rather than logits (e.g. Kodge et
    al.'s U-LiRA code scores ``p / (1 - p)``). The complement is summed over the
    other classes instead of computed as ``1 - p_y``, which avoids cancellation
    when ``p_y`` is close to 1; both terms are floored at ``eps`` so the result
    is finite (bounded by ``|log eps|``) even for exact 0/1 probabilities. Prefer
    :func:`logit_confidence` when logits are available: saturated float32
    probabilities have already lost the information.

    Args:
      probs: ``[..., C]`` probabilities (rows should sum to 1).
      labels: ``[...]`` integer labels in ``[0, C)``.
      eps: floor of both probability masses before the log.

    Returns:
      ``[...]`` phi, as :func:`logit_confidence`.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = jnp.array([[0.75, 0.25], [1.0, 0.0]])
      >>> logit_confidence_from_probs(p, jnp.array([0, 0])).round(4).tolist()
      [1.0986, 69.0776]
    """
    probs = jnp.asarray(probs)
    host = _host(probs)
    p = _float(probs, "probs")
    labels = jnp.asarray(labels)
    _check_labels(p, labels, "probs")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    if host is not None:
        if not np.all(np.isfinite(host)):
            raise ValueError("probs contains non-finite values.")
        if np.any(host < 0):
            raise ValueError("probs has negative entries.")
    onehot = jnp.arange(p.shape[-1]) == labels[..., None]
    p_y = jnp.sum(jnp.where(onehot, p, 0.0), axis=-1)
    p_rest = jnp.sum(jnp.where(onehot, 0.0, p), axis=-1)
    return jnp.log(jnp.maximum(p_y, eps)) - jnp.log(jnp.maximum(p_rest, eps))
