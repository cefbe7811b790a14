"""Accuracies and per-example losses from logits (numpy in, numpy out)."""

import numpy as np


def _check(logits, labels):
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {logits.shape}.")
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"labels has shape {labels.shape}, expected ({logits.shape[0]},)."
        )
    return logits, labels


def accuracy(logits, labels) -> float:
    """Top-1 accuracy in [0, 1]; ``nan`` for an empty set.

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
    """Per-example softmax cross-entropy, computed stably in float64."""
    logits, labels = _check(logits, labels)
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=-1))
    return logz - z[np.arange(len(labels)), labels]
