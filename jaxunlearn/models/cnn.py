"""Small 3-block CNN with BatchNorm.

The CNN used for image experiments in the distributional-unlearning paper
(App. B.5): three blocks of ``[Conv3x3-BN-ReLU x2 + MaxPool2x2]`` with widths
32/64/128, global average pooling and a linear head.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxunlearn.models import _layers


class _ConvBlock(nn.Module):
    """``[Conv3x3-BN-ReLU] x 2`` followed by a 2x2 max pool."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(2):
            x = _layers.conv(
                self.features, (3, 3), padding="SAME", name=f"conv{i + 1}"
            )(x)
            x = _layers.normalize(x, "batch", train, name=f"bn{i + 1}")
            x = nn.relu(x)
        return _layers.max_pool2x2(x)


class CNN(nn.Module):
    """3-block CNN classifier with BatchNorm.

    Parameter groups: ``"block1"``, ``"block2"``, ``"block3"`` (one per entry
    of ``widths``) and ``"head"``. BatchNorm statistics live in the
    ``"batch_stats"`` collection under the same group names. Pooling is
    skipped on spatial axes already of size 1, so 8x8 inputs work.

    Attributes:
      num_classes: number of output classes (>= 2).
      widths: channels of each block.

    References:
      Distributional unlearning paper, App. B.5 (3-block CNN).
    """

    num_classes: int
    widths: Sequence[int] = (32, 64, 128)

    def __post_init__(self):
        _layers.check_num_classes(self.num_classes)
        object.__setattr__(
            self,
            "widths",
            _layers.check_positive_ints("widths", self.widths, allow_empty=False),
        )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Classifies a batch of images.

        Args:
          x: images ``[N, H, W, C]``.
          train: use batch statistics (and update the running averages).
          return_features: also return the head's input.

        Returns:
          Logits ``[N, num_classes]``, or ``(logits, features)`` with features
          ``[N, widths[-1]]`` when ``return_features`` is True.
        """
        _layers.check_images(x)
        for i, width in enumerate(self.widths):
            x = _ConvBlock(width, name=f"block{i + 1}")(x, train)
        features = _layers.global_avg_pool(x)
        logits = nn.Dense(self.num_classes, name="head")(features)
        return (logits, features) if return_features else logits
