"""ResNets for small images (CIFAR stem).

ResNet-18 (BasicBlock) and ResNet-50 (Bottleneck, expansion 4) with the CIFAR
stem (3x3 conv, stride 1, no max pool), stage widths ``width * (1, 2, 4, 8)``,
stride 2 at the first block of every stage after the first, global average
pooling and a linear head. The normalisation layer is selectable (BatchNorm,
InstanceNorm or GroupNorm). Variants are ``functools.partial``s of
:class:`ResNet`, as in flax's ``examples/imagenet/models.py``.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxunlearn.models import _layers

BLOCKS = ("basic", "bottleneck")


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    return _layers.conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=[(kernel // 2, kernel // 2)] * 2,
        use_bias=False,
        name=name,
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a (projected) identity shortcut.

    Attributes:
      features: output channels.
      stride: stride of the first conv (and of the shortcut projection).
      norm: ``"batch"``, ``"instance"`` or ``"group"``.
    """

    features: int
    stride: int = 1
    norm: str = "batch"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block to ``x`` ``[N, H, W, C]``."""
        y = _conv(self.features, 3, self.stride, "conv1")(x)
        y = nn.relu(_layers.normalize(y, self.norm, train, name="norm1"))
        y = _conv(self.features, 3, 1, "conv2")(y)
        y = _layers.normalize(y, self.norm, train, name="norm2")
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.stride, "shortcut_conv")(x)
            shortcut = _layers.normalize(
                shortcut, self.norm, train, name="shortcut_norm"
            )
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1 -> 3x3 -> 1x1, expansion 4).

    The stride sits on the 3x3 conv ("ResNet v1.5"), as in torchvision and the
    common CIFAR implementations.

    Attributes:
      features: bottleneck channels; the block outputs ``4 * features``.
      stride: stride of the 3x3 conv (and of the shortcut projection).
      norm: ``"batch"``, ``"instance"`` or ``"group"``.
    """

    features: int
    stride: int = 1
    norm: str = "batch"
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Applies the block to ``x`` ``[N, H, W, C]``."""
        out_features = self.features * self.expansion
        y = _conv(self.features, 1, 1, "conv1")(x)
        y = nn.relu(_layers.normalize(y, self.norm, train, name="norm1"))
        y = _conv(self.features, 3, self.stride, "conv2")(y)
        y = nn.relu(_layers.normalize(y, self.norm, train, name="norm2"))
        y = _conv(out_features, 1, 1, "conv3")(y)
        y = _layers.normalize(y, self.norm, train, name="norm3")
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_features:
            shortcut = _conv(out_features, 1, self.stride, "shortcut_conv")(x)
            shortcut = _layers.normalize(
                shortcut, self.norm, train, name="shortcut_norm"
            )
        return nn.relu(y + shortcut)


class _Stem(nn.Module):
    """CIFAR stem: 3x3 conv, stride 1 -> norm -> ReLU (no max pool)."""

    features: int
    norm: str = "batch"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _conv(self.features, 3, 1, "conv")(x)
        return nn.relu(_layers.normalize(x, self.norm, train, name="norm"))


class _Stage(nn.Module):
    """A stage of ``num_blocks`` residual blocks; the first may downsample."""

    block: str
    num_blocks: int
    features: int
    stride: int
    norm: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        for j in range(self.num_blocks):
            stride = self.stride if j == 0 else 1
            x = block_cls(
                self.features, stride=stride, norm=self.norm, name=f"block{j + 1}"
            )(x, train)
        return x


class ResNet(nn.Module):
    """ResNet classifier with a CIFAR stem.

    Parameter groups: ``"stem"``, ``"layer1"``, ..., ``"layer{K}"`` (one per
    entry of ``stage_sizes``; K = 4 for ResNet-18/50) and ``"head"``. With
    ``norm="batch"`` the BatchNorm statistics live in ``"batch_stats"`` under
    the same group names; with ``"instance"`` or ``"group"`` there is no
    ``"batch_stats"`` collection.

    Attributes:
      num_classes: number of output classes (>= 2).
      stage_sizes: number of residual blocks per stage.
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50+).
      width: channels of the stem and the first stage; stage ``i`` has
        ``width * 2**i`` (times 4 at the output of bottleneck blocks).
      norm: ``"batch"`` (BatchNorm), ``"instance"`` (GroupNorm with one channel
        per group) or ``"group"`` (GroupNorm with ``min(32, C)`` groups, or
        the largest divisor of ``C`` below that when it does not divide ``C``).

    References:
      He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"
    width: int = 64
    norm: str = "batch"

    def __post_init__(self):
        _layers.check_num_classes(self.num_classes)
        object.__setattr__(
            self,
            "stage_sizes",
            _layers.check_positive_ints(
                "stage_sizes", self.stage_sizes, allow_empty=False
            ),
        )
        if self.block not in BLOCKS:
            raise ValueError(f"`block` must be one of {BLOCKS}, got {self.block!r}.")
        _layers.check_positive_int("width", self.width)
        if self.norm not in _layers.NORMS:
            raise ValueError(
                f"`norm` must be one of {_layers.NORMS}, got {self.norm!r}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Classifies a batch of images.

        Args:
          x: images ``[N, H, W, C]``.
          train: use batch statistics (and update the running averages) when
            ``norm="batch"``.
          return_features: also return the head's input.

        Returns:
          Logits ``[N, num_classes]``, or ``(logits, features)`` with features
          ``[N, width * 2**(K-1) * e]`` (``e`` = 1 for basic, 4 for bottleneck
          blocks; 512 / 2048 for ResNet-18 / -50 at width 64) when
          ``return_features`` is True.
        """
        _layers.check_images(x)
        x = _Stem(self.width, norm=self.norm, name="stem")(x, train)
        for i, num_blocks in enumerate(self.stage_sizes):
            x = _Stage(
                block=self.block,
                num_blocks=num_blocks,
                features=self.width * 2**i,
                stride=1 if i == 0 else 2,
                norm=self.norm,
                name=f"layer{i + 1}",
            )(x, train)
        features = _layers.global_avg_pool(x)
        logits = nn.Dense(self.num_classes, name="head")(features)
        return (logits, features) if return_features else logits


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
ResNet18.__doc__ = "ResNet-18 (BasicBlock, stage sizes (2, 2, 2, 2)), CIFAR stem."
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck")
ResNet50.__doc__ = "ResNet-50 (Bottleneck, stage sizes (3, 4, 6, 3)), CIFAR stem."
