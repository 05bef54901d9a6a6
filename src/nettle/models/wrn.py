"""CIFAR WideResNet-depth-width (Zagoruyko & Komodakis 2016, arXiv:1605.07146).

Pre-activation basic blocks in three groups of n = (depth - 4) / 6 blocks with widths
16k, 32k, 64k (strides 1, 2, 2), a 3x3 stem with 16 channels, BN-ReLU, global average pooling
and a linear classifier. WRN-28-10 has 36,479,194 parameters.

Substitution (as Gray et al. 2019): only the two 3x3 convolutions inside each block go through
`conv=`; the stem and the 1x1 shortcut convolutions (where the width changes) stay dense.
Attention-transfer points: the output of each group (`block1`, `block2`, `block3`), before the
final BN-ReLU. Initialisation: dense conv weights N(0, 2 / (k*k*out)), BN 1/0, Linear bias 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["BasicBlock", "WideResNet"]


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus identity or dense 1x1 shortcut."""

    def __init__(self, conv, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.equal = c_in == c_out and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(o)))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 images."""

    checkpoint_block_types: tuple[type[nn.Module], ...] = (BasicBlock,)
    """The blocks `nettle.nn.checkpointing.checkpoint_blocks` recomputes."""

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        conv: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40...), got {depth}"
                " (the ImageNet network is 'wrn-50-2')"
            )
        if width < 1:
            raise ValueError(f"WRN width must be >= 1, got {width}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        sub = get_conv_class(conv)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        for g, stride in enumerate((1, 2, 2), start=1):
            blocks = [
                BasicBlock(
                    sub,
                    widths[g - 1] if i == 0 else widths[g],
                    widths[g],
                    stride if i == 0 else 1,
                    dropout,
                )
                for i in range(n)
            ]
            self.add_module(f"block{g}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self.at_layers = ["block1", "block2", "block3"]
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if type(m) is nn.Conv2d:
                k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / k))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(self.relu(self.bn(x)))))


@MODELS.register("_wrn")
def wide_resnet(
    depth: int,
    width: int,
    num_classes: int = 10,
    in_channels: int = 3,
    conv: str | None = None,
    dropout: float = 0.0,
) -> WideResNet:
    """`wrn-<depth>-<width>` (see `WideResNet`)."""
    return WideResNet(depth, width, num_classes, in_channels, conv, dropout)
