"""VGG-11/13/16/19 (Simonyan & Zisserman 2015) with a CIFAR or an ImageNet head.

`head="cifar"` (default): conv features, global average pooling, one Linear 512 -> classes.
`head="imagenet"`: the torchvision layout, 7x7 adaptive pooling and 4096-4096-classes with
dropout (VGG-16 without batch norm has 138,357,544 parameters). Substitution: every conv except
the first goes through `conv=`. Attention-transfer points: the output of each max-pool stage.
"""

from __future__ import annotations

from torch import Tensor, nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["VGG"]

_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGG(nn.Module):
    """VGG features (3x3 convs, ReLU, optional BN, max-pools) and a classifier head."""

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        conv: str | None = None,
        head: str = "cifar",
        batch_norm: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if head not in ("cifar", "imagenet"):
            raise ValueError(f"VGG head must be 'cifar' or 'imagenet', got {head!r}")
        sub, dense = get_conv_class(conv), get_conv_class(None)
        layers: list[nn.Module] = []
        self.at_layers = []
        c, first = in_channels, True
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                self.at_layers.append(f"features.{len(layers) - 1}")
                continue
            make = dense if first else sub
            first = False
            layers.append(make(c, int(v), 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU())
            c = int(v)
        self.features = nn.Sequential(*layers)
        if head == "cifar":
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * 49, 4096),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(4096, num_classes),
            )
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def _register(name: str) -> None:
    def build(
        num_classes: int = 10,
        in_channels: int = 3,
        conv: str | None = None,
        head: str = "cifar",
        batch_norm: bool = True,
        dropout: float = 0.5,
    ) -> VGG:
        return VGG(_CFGS[name], num_classes, in_channels, conv, head, batch_norm, dropout)

    build.__doc__ = f"{name.upper()} (see `VGG`)."
    MODELS.add(name, build)


for _name in _CFGS:
    _register(_name)
