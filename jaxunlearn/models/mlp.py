"""Multi-layer perceptron classifier.

A plain ReLU MLP for flattened images (or already-flat ``[N, D]`` features),
with parameters grouped per hidden layer (``"block1"``, ..., ``"blockK"``) and a
final linear ``"head"``.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxunlearn.models import _layers


class _DenseBlock(nn.Module):
    """Dense -> ReLU -> (Dropout when training)."""

    features: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Dense(self.features, name="dense")(x)
        x = nn.relu(x)
        if self.dropout_rate > 0.0:
            x = nn.Dropout(rate=self.dropout_rate, deterministic=not train)(x)
        return x


class MLP(nn.Module):
    """ReLU MLP classifier.

    Parameter groups (top-level keys of ``variables["params"]``):
    ``"block1"``, ..., ``"blockK"`` (one per hidden layer) and ``"head"``.
    The model has no ``"batch_stats"``.

    Attributes:
      num_classes: number of output classes (>= 2).
      hidden: widths of the hidden layers; may be empty (logistic regression).
      dropout_rate: dropout after each hidden ReLU, active only when
        ``train=True`` (needs the ``"dropout"`` rng stream).
    """

    num_classes: int
    hidden: Sequence[int] = (256, 256)
    dropout_rate: float = 0.0

    def __post_init__(self):
        _layers.check_num_classes(self.num_classes)
        object.__setattr__(
            self,
            "hidden",
            _layers.check_positive_ints("hidden", self.hidden, allow_empty=True),
        )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(
                f"`dropout_rate` must be in [0, 1), got {self.dropout_rate!r}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Classifies a batch.

        Args:
          x: inputs ``[N, H, W, C]`` (any ``[N, ...]`` is flattened to
            ``[N, D]``).
          train: enables dropout.
          return_features: also return the head's input.

        Returns:
          Logits ``[N, num_classes]``, or ``(logits, features)`` with features
          ``[N, hidden[-1]]`` when ``return_features`` is True.
        """
        if jnp.ndim(x) < 2:
            raise ValueError(
                f"`x` must have a leading batch axis, [N, ...], got shape "
                f"{jnp.shape(x)}."
            )
        x = jnp.reshape(x, (x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = _DenseBlock(width, self.dropout_rate, name=f"block{i + 1}")(x, train)
        logits = nn.Dense(self.num_classes, name="head")(x)
        return (logits, x) if return_features else logits
