"""VGG-11/13/16/19 (Simonyan & Zisserman 2015, arXiv:1409.1556) with a CIFAR or ImageNet head.

Five stages of 3x3 conv(-BN)-ReLU layers (64, 128, 256, 512, 512 channels), each closed by a
2x2 max-pool. Heads:

* `head="cifar"` (default): global average pooling, one Linear 512 -> classes; batch norm on by
  default (the usual CIFAR VGG).
* `head="imagenet"`: the torchvision layout, 7x7 adaptive average pooling and
  4096-4096-classes with ReLU and dropout; batch norm off by default, so `vgg16` with 1000
  classes has the published 138,357,544 parameters and torchvision's parameter names. (With
  batch norm the convs have no bias, BN's shift replaces it; torchvision's `vgg*_bn` keep one.)

Substitution: every convolution except the first (which sees the raw image channels) is built
through `conv=`; the classifier stays dense. Attention-transfer points: the output of each
stage's max-pool (`features.<index>`). Initialisation as torchvision: dense convs kaiming
normal (fan_out), BN 1/0, Linear N(0, 0.01) with bias 0.
"""

from __future__ import annotations

from torch import Tensor, nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["VGG", "vgg_layers"]

STAGE_WIDTHS = (64, 128, 256, 512, 512)
_DEPTHS: dict[str, tuple[int, ...]] = {  # conv layers per stage
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}


def vgg_layers(
    depths: tuple[int, ...], in_channels: int, conv: str | None, batch_norm: bool
) -> tuple[list[nn.Module], list[int]]:
    """The feature layers and the indices of their max-pools (the stage outputs)."""
    sub, dense = get_conv_class(conv), get_conv_class(None)
    layers: list[nn.Module] = []
    pools: list[int] = []
    c = in_channels
    for n, width in zip(depths, STAGE_WIDTHS):
        for _ in range(n):
            make = dense if not layers else sub
            layers.append(make(c, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            c = width
        pools.append(len(layers))
        layers.append(nn.MaxPool2d(2, 2))
    return layers, pools


def _imagenet_classifier(c: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(c * 49, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, num_classes),
    )


class VGG(nn.Module):
    """VGG features (3x3 convs, ReLU, optional BN, max-pools) and a classifier head.

    Args:
        depths: conv layers in each of the five stages, e.g. (2, 2, 3, 3, 3) for VGG-16.
        num_classes: classifier outputs.
        in_channels: image channels.
        conv: substitute spec for every conv but the first.
        head: "cifar" (global pool, one Linear) or "imagenet" (7x7 pool, 4096-4096-classes).
        batch_norm: BN after each conv; None means on for the CIFAR head, off for ImageNet.
        dropout: dropout probability of the ImageNet head.
    """

    def __init__(
        self,
        depths: tuple[int, ...],
        num_classes: int = 10,
        in_channels: int = 3,
        conv: str | None = None,
        head: str = "cifar",
        batch_norm: bool | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if head not in ("cifar", "imagenet"):
            raise ValueError(f"VGG head must be 'cifar' or 'imagenet', got {head!r}")
        if batch_norm is None:
            batch_norm = head == "cifar"
        layers, pools = vgg_layers(depths, in_channels, conv, batch_norm)
        self.features = nn.Sequential(*layers)
        self.at_layers = [f"features.{i}" for i in pools]
        c = STAGE_WIDTHS[len(depths) - 1]
        self.avgpool = nn.AdaptiveAvgPool2d(1 if head == "cifar" else 7)
        self.flatten = nn.Flatten()
        self.classifier: nn.Module = (
            nn.Linear(c, num_classes)
            if head == "cifar"
            else _imagenet_classifier(c, num_classes, dropout)
        )
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _register(name: str) -> None:
    def build(
        num_classes: int = 10,
        in_channels: int = 3,
        conv: str | None = None,
        head: str = "cifar",
        batch_norm: bool | None = None,
        dropout: float = 0.5,
    ) -> VGG:
        return VGG(_DEPTHS[name], num_classes, in_channels, conv, head, batch_norm, dropout)

    build.__doc__ = f"{name.upper()}: conv layers per stage {_DEPTHS[name]} (see `VGG`)."
    MODELS.add(name, build)


for _name in _DEPTHS:
    _register(_name)
