"""VGG with BatchNorm for small images (CIFAR-style).

VGG-19-BN: ``[64, 64, M, 128, 128, M, 256 x 4, M, 512 x 4, M, 512 x 4, M]``
(every conv is ``Conv3x3-BN-ReLU``), global average pooling and a single linear
head, as in the common CIFAR VGG implementations. Each ``M``-terminated
segment is one parameter group (``"block1"``, ..., ``"block5"``).
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxunlearn.models import _layers

VGG19_STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
"""Conv widths of VGG-19, one tuple per max-pooled stage."""


class _VGGBlock(nn.Module):
    """``[Conv3x3-BN-ReLU] x len(widths)`` followed by a 2x2 max pool."""

    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, width in enumerate(self.widths):
            x = _layers.conv(width, (3, 3), padding="SAME", name=f"conv{i + 1}")(x)
            x = _layers.normalize(x, "batch", train, name=f"bn{i + 1}")
            x = nn.relu(x)
        return _layers.max_pool2x2(x)


class VGG(nn.Module):
    """VGG classifier with BatchNorm and a single linear head.

    Parameter groups: ``"block1"``, ..., ``"block{len(stages)}"`` and
    ``"head"``; BatchNorm statistics live in ``"batch_stats"`` under the same
    group names. Max pooling is skipped on spatial axes already of size 1, so
    8x8 inputs work.

    Attributes:
      num_classes: number of output classes (>= 2).
      stages: conv widths per stage; each stage ends with a 2x2 max pool.
      width_scale: multiplies every width (rounded, at least 1); use e.g.
        ``0.125`` for tiny test models.

    References:
      Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
      Image Recognition", ICLR 2015; Ioffe & Szegedy, "Batch Normalization",
      ICML 2015.
    """

    num_classes: int
    stages: Sequence[Sequence[int]] = VGG19_STAGES
    width_scale: float = 1.0

    def __post_init__(self):
        _layers.check_num_classes(self.num_classes)
        if isinstance(self.stages, (str, bytes)) or not isinstance(
            self.stages, Sequence
        ):
            raise ValueError(
                f"`stages` must be a sequence of int sequences, got {self.stages!r}."
            )
        object.__setattr__(
            self,
            "stages",
            tuple(
                _layers.check_positive_ints("stages", s, allow_empty=False)
                for s in self.stages
            ),
        )
        if not self.stages:
            raise ValueError("`stages` must not be empty.")
        if (
            isinstance(self.width_scale, bool)
            or not isinstance(self.width_scale, (int, float))
            or not self.width_scale > 0
        ):
            raise ValueError(
                f"`width_scale` must be a positive float, got {self.width_scale!r}."
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
          ``[N, round(512 * width_scale)]`` for VGG-19 when ``return_features``
          is True.
        """
        _layers.check_images(x)
        for i, widths in enumerate(self.stages):
            scaled = tuple(max(1, round(w * self.width_scale)) for w in widths)
            x = _VGGBlock(scaled, name=f"block{i + 1}")(x, train)
        features = _layers.global_avg_pool(x)
        logits = nn.Dense(self.num_classes, name="head")(features)
        return (logits, features) if return_features else logits


VGG19 = functools.partial(VGG, stages=VGG19_STAGES)
VGG19.__doc__ = "VGG-19 with BatchNorm and a single linear head (CIFAR-style)."
