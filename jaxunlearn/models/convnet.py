"""ConvNet-3: the light feature extractor of the Blend paper.

Three blocks of ``[Conv3x3 (128 ch, SAME, bias) -> InstanceNorm -> ReLU ->
AvgPool2x2]``, flattened (``128 * 4 * 4 = 2048``-D features for 32x32 inputs)
into a linear head. This is the "ConvNet" of the dataset-distillation
literature with ``instancenorm``; InstanceNorm is GroupNorm with one channel
per group and an affine scale/bias.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxunlearn.models import _layers


class _ConvNetBlock(nn.Module):
    """Conv3x3 -> InstanceNorm -> ReLU -> AvgPool2x2."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _layers.conv(self.features, (3, 3), padding="SAME", name="conv")(x)
        x = _layers.normalize(x, "instance", train=False, name="norm")
        x = nn.relu(x)
        return _layers.avg_pool2x2(x)


class ConvNet3(nn.Module):
    """ConvNet-``depth`` classifier with InstanceNorm (no BatchNorm).

    Parameter groups: ``"block1"``, ..., ``"block{depth}"`` and ``"head"``.
    There is no ``"batch_stats"`` collection. Pooling is skipped on spatial
    axes already of size 1, so 8x8 inputs work (features are then
    ``width * 1 * 1``).

    Attributes:
      num_classes: number of output classes (>= 2).
      width: channels of every conv layer.
      depth: number of conv blocks.

    References:
      Blend paper, light feature extractor "ConvNet-3"; architecture of
      Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021.
    """

    num_classes: int
    width: int = 128
    depth: int = 3

    def __post_init__(self):
        _layers.check_num_classes(self.num_classes)
        _layers.check_positive_int("width", self.width)
        _layers.check_positive_int("depth", self.depth)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Classifies a batch of images.

        Args:
          x: images ``[N, H, W, C]``.
          train: unused (the model has no dropout or BatchNorm); kept for the
            common model signature.
          return_features: also return the head's input.

        Returns:
          Logits ``[N, num_classes]``, or ``(logits, features)`` with features
          ``[N, width * H' * W']`` (``[N, 2048]`` for 32x32 inputs and the
          default width) when ``return_features`` is True.
        """
        del train
        _layers.check_images(x)
        for i in range(self.depth):
            x = _ConvNetBlock(self.width, name=f"block{i + 1}")(x)
        features = jnp.reshape(x, (x.shape[0], -1))
        logits = nn.Dense(self.num_classes, name="head")(features)
        return (logits, features) if return_features else logits
