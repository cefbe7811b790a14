"""Pieces shared by the gradient-based baselines."""

import jax
import jax.numpy as jnp

from jaxunlearn import losses


def batch_ce(apply_fn, variables, part, key, labels=None, train=True):
    """Masked mean cross-entropy of one batch in training mode.

    Args:
      apply_fn: ``apply_fn(variables, x, *, train, key) -> (logits, variables)``.
      variables: current Flax variables.
      part: ``{"image", "label", "mask"}`` batch.
      key: dropout key.
      (``part["mask"]`` also reaches every BatchNorm layer: padded slots
      never enter the batch statistics.)
      labels: optional labels replacing ``part["label"]``.
      train: run the model in training mode (False: BatchNorm uses and keeps
        its running averages, dropout off).

    Returns:
      ``(loss, new_variables, accuracy)``; accuracy is w.r.t. ``part["label"]``.
    """
    logits, variables = apply_fn(
        variables, part["image"], train=train, key=key, mask=part["mask"]
    )
    y = part["label"] if labels is None else labels
    loss = losses.masked_mean(losses.cross_entropy(logits, y), part["mask"])
    correct = (jnp.argmax(logits, -1) == part["label"]).astype(jnp.float32)
    return loss, variables, losses.masked_mean(correct, part["mask"])


def random_other_labels(key: jax.Array, labels: jax.Array, num_classes: int):
    """Uniformly random labels that differ from ``labels``."""
    shift = jax.random.randint(key, labels.shape, 1, num_classes)
    return (labels + shift) % num_classes
