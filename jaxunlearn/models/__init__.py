"""Model zoo: flax.linen classifiers with parameter groups, and a registry.

Every model is called as ``model.apply(variables, x, train=..., return_features=
...)`` on images ``[N, H, W, C]`` and returns logits ``[N, num_classes]`` (or
``(logits, features)``). The top-level keys of ``variables["params"]`` are stage
names (``"block1"``, ``"layer3"``, ``"head"``, ...) so methods can train only
some groups (:func:`group_mask`). Library code calls models only through
:func:`make_apply_fn`.
"""

from collections.abc import Callable

import flax.linen as nn

from jaxunlearn.models import _layers
from jaxunlearn.models._forward import (
    ADAPTERS,
    forward,
    group_mask,
    init,
    make_apply_fn,
    param_groups,
    stage_widths,
)
from jaxunlearn.models.cnn import CNN
from jaxunlearn.models.convnet import ConvNet3
from jaxunlearn.models.mlp import MLP
from jaxunlearn.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet50
from jaxunlearn.models.vgg import VGG, VGG19

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "convnet3": ConvNet3,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "vgg19": VGG19,
}


def names() -> tuple[str, ...]:
    """Names accepted by :func:`get_model`, in registry order."""
    return tuple(_REGISTRY)


def get_model(name: str, num_classes: int, **kw) -> nn.Module:
    """Builds a registered model.

    Args:
      name: one of :func:`names`: ``"mlp"``, ``"cnn"``, ``"convnet3"``,
        ``"resnet18"``, ``"resnet50"``, ``"vgg19"``.
      num_classes: number of output classes (an int >= 2).
      **kw: options of the model class, e.g. ``hidden=(16,)`` (mlp),
        ``widths`` (cnn), ``width``/``depth`` (convnet3), ``width``/``norm``/
        ``stage_sizes`` (resnets), ``width_scale`` (vgg19).

    Returns:
      The (unbound) flax.linen module.

    Raises:
      ValueError: for an unknown ``name`` (the message lists the valid names),
        a bad ``num_classes`` or a bad option value.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxunlearn import models
      >>> model = models.get_model("resnet18", num_classes=10, width=8)
      >>> x = jnp.zeros((2, 8, 8, 3))
      >>> variables = models.init(model, jax.random.key(0), x)
      >>> models.param_groups(variables["params"])
      ('head', 'layer1', 'layer2', 'layer3', 'layer4', 'stem')
      >>> apply_fn = models.make_apply_fn(model)
      >>> (logits, feats), variables = apply_fn(
      ...     variables, x, train=True, return_features=True)
      >>> logits.shape, feats.shape
      ((2, 10), (2, 64))
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown model `name` {name!r}; valid names: {names()}.")
    _layers.check_num_classes(num_classes)
    return _REGISTRY[name](num_classes=int(num_classes), **kw)


__all__ = [
    "ADAPTERS",
    "CNN",
    "MLP",
    "VGG",
    "VGG19",
    "BasicBlock",
    "Bottleneck",
    "ConvNet3",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "forward",
    "get_model",
    "group_mask",
    "init",
    "make_apply_fn",
    "names",
    "param_groups",
    "stage_widths",
]
