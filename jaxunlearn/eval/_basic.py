"""Accuracies and per-example losses from logits (numpy in, numpy out)."""

import numpy as np


def _check(logits, labels):
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be [N, C], C >= 1, got shape {logits.shape}.")
    if not (
        np.issubdtype(logits.dtype, np.floating)
        or np.issubdtype(logits.dtype, np.integer)
    ):
        raise TypeError(f"logits must be a real array, got dtype {logits.dtype}.")
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"labels has shape {labels.shape}, expected ({logits.shape[0]},) to "
            f"match logits of shape {logits.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}) (the number of classes of "
            f"logits), got range [{labels.min()}, {labels.max()}]."
        )
    return logits, labels


def accuracy(logits, labels) -> float:
    """Top-1 accuracy in [0, 1]; ``nan`` for an empty set.

    Non-finite logits are allowed (a diverged model still has an accuracy:
    ``argmax`` picks the first ``nan``), so this works on any model's output.

    Args:
      logits: ``[N, C]`` logits (numpy or concrete jax array).
      labels: ``[N]`` integer labels in ``[0, C)``.

    Raises:
      ValueError: if ``logits`` is not 2-D, the shapes do not match, or a label
        is outside ``[0, C)``.
      TypeError: if ``labels`` are not integers.

    Examples:
      >>> import numpy as np
      >>> accuracy(np.eye(3), np.array([0, 1, 0]))
      0.666...
    """
    logits, labels = _check(logits, labels)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.argmax(logits, -1) == labels))


def per_example_loss(logits, labels) -> np.ndarray:
    """Per-example softmax cross-entropy, computed stably in float64.

    Args:
      logits: ``[N, C]`` finite logits.
      labels: ``[N]`` integer labels in ``[0, C)``.

    Returns:
      ``[N]`` float64 losses.

    Raises:
      ValueError: on the shape / label problems of :func:`accuracy`, or
        non-finite logits.
      TypeError: if ``labels`` are not integers.

    Examples:
      >>> import numpy as np
      >>> per_example_loss(np.zeros((1, 4)), np.array([2])).round(4).tolist()
      [1.3863]
    """
    logits, labels = _check(logits, labels)
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contains non-finite values.")
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=-1))
    return logz - z[np.arange(len(labels)), labels]
