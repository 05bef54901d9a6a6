"""ImageNet ResNets (He et al. 2016) and WRN-50-2 (Zagoruyko & Komodakis 2016), torchvision layout.

ResNet-18/34 use basic blocks, ResNet-50 and WRN-50-2 post-activation bottlenecks (stride on
the 3x3 conv); WRN-50-2 doubles the bottleneck width (68,883,240 parameters; ResNet-50 has
25,557,032). Substitution (as Gray et al. 2019 for WRN-50-2): every convolution inside the
blocks AND the 1x1 downsampling shortcut convolutions go through `conv=`; the 7x7 stem and the
classifier stay dense. Attention-transfer points: the four stages (`layer1` ... `layer4`).
"""

from __future__ import annotations

from torch import Tensor, nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _shortcut(conv, c_in: int, c_out: int, stride: int) -> nn.Module | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    expansion = 1

    def __init__(self, conv, c_in: int, planes: int, stride: int, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = conv(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(conv, c_in, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN + shortcut, ReLU."""

    expansion = 4

    def __init__(self, conv, c_in: int, planes: int, stride: int, base_width: int = 64) -> None:
        super().__init__()
        width = planes * base_width // 64
        out = planes * self.expansion
        self.conv1 = conv(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv3 = conv(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = _shortcut(conv, c_in, out, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(y)))))
        return self.relu3(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet with a 7x7/2 stem, 3x3/2 max-pool, four stages and a linear classifier."""

    checkpoint_block_types: tuple[type[nn.Module], ...] = (BasicBlock, Bottleneck)
    """The blocks `nettle.nn.checkpointing.checkpoint_blocks` recomputes."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        conv: str | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        sub = get_conv_class(conv)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_in = 64
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            blocks = []
            for j in range(n):
                stride = 2 if i > 1 and j == 0 else 1
                blocks.append(block(sub, c_in, planes, stride, base_width))
                c_in = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.avgpool.reference_window = True  # the reference's AvgPool2d(7) (conventions.py)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        self.at_layers = ["layer1", "layer2", "layer3", "layer4"]
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def _register(name: str, block, layers: list[int], base_width: int = 64) -> None:
    def build(num_classes: int = 1000, in_channels: int = 3, conv: str | None = None) -> ResNet:
        return ResNet(block, layers, num_classes, in_channels, conv, base_width)

    build.__doc__ = (
        f"{name}: {block.__name__} blocks {layers}, bottleneck width x{base_width // 64}."
    )
    MODELS.add(name, build)


_register("resnet18", BasicBlock, [2, 2, 2, 2])
_register("resnet34", BasicBlock, [3, 4, 6, 3])
_register("resnet50", Bottleneck, [3, 4, 6, 3])
_register("wrn-50-2", Bottleneck, [3, 4, 6, 3], base_width=128)
