"""The DARTS CIFAR-10 network (Liu, Simonyan & Yang, ICLR 2019, arXiv:1806.09055).

The published DARTS-V2 genotype, 20 cells with 36 initial channels (reduction cells at 1/3 and
2/3 of the depth), an optional auxiliary head on the output of the second reduction cell, and
drop-path on every non-identity op during training.

Substitution (as Gray et al. 2019): the base convolution is `Sep` (a depthwise-separable conv,
so `conv=None` is the original DARTS); `conv=` replaces every convolution inside the separable
and dilated ops AND the 1x1 convolutions of the cell preprocessing (ReLU-conv-BN and
FactorizedReduce). The stem, the classifier and the auxiliary head stay dense.

Shapes: (N, C_in, 32, 32) -> (N, num_classes). In training mode with the auxiliary head, the
auxiliary logits of the last forward pass are kept in `model.aux_logits` (None otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["DARTS", "DARTS_V2", "Genotype", "drop_path"]

ConvClass = Callable[..., nn.Module]


class Genotype:
    """A cell genotype: per node two (op, input) pairs, and the nodes concatenated."""

    def __init__(
        self,
        normal: list[tuple[str, int]],
        normal_concat: list[int],
        reduce: list[tuple[str, int]],
        reduce_concat: list[int],
    ) -> None:
        self.normal, self.normal_concat = normal, normal_concat
        self.reduce, self.reduce_concat = reduce, reduce_concat


# the published DARTS-V2 (second-order) cells
DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole examples with probability `p` and rescale the rest by `1 / (1 - p)`."""
    if not training or p <= 0.0:
        return x
    keep = torch.empty(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
    return x * keep.bernoulli_(1.0 - p) / (1.0 - p)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv (substitutable) -> BN."""

    def __init__(self, conv: ConvClass, c_in: int, c_out: int, k: int, stride: int, pad: int):
        super().__init__(
            nn.ReLU(),
            conv(c_in, c_out, k, stride=stride, padding=pad, bias=False),
            nn.BatchNorm2d(c_out),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two stride-2 1x1 convs, one shifted by a pixel, concatenated."""

    def __init__(self, conv: ConvClass, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output width, got {c_out}")
        self.relu = nn.ReLU()
        self.conv_1 = conv(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = conv(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _sep_conv(conv: ConvClass, c: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(),
        conv(c, c, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        conv(c, c, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(c),
    )


def _make_op(name: str, conv: ConvClass, c: int, stride: int) -> nn.Module:
    if name == "sep_conv_3x3":
        return _sep_conv(conv, c, stride)
    if name == "dil_conv_3x3":
        return nn.Sequential(
            nn.ReLU(),
            conv(c, c, 3, stride=stride, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(c),
        )
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(conv, c, c)
    raise ValueError(f"unknown DARTS op {name!r}")


class Cell(nn.Module):
    """One DARTS cell: two preprocessed inputs, four nodes, the nodes concatenated."""

    def __init__(
        self,
        genotype: Genotype,
        conv: ConvClass,
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(conv, c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(conv, c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(conv, c_prev, c, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.reduction = reduction
        self.indices = [index for _, index in pairs]
        self.ops = nn.ModuleList(
            _make_op(name, conv, c, 2 if reduction and index < 2 else 1) for name, index in pairs
        )
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for j in (2 * node, 2 * node + 1):
                op = self.ops[j]
                h = op(states[self.indices[j]])
                if not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob, self.training)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Sequential):
    """The CIFAR auxiliary classifier on an 8x8 feature map (dense, never substituted)."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(768, num_classes),
        )


class DARTS(nn.Module):
    """The DARTS evaluation network for 32x32 images.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        conv: substitute spec for the substitutable convolutions (None: `Sep`, the original).
        channels: initial channels C (36).
        layers: number of cells (20).
        auxiliary: build the auxiliary head (used only in training mode).
        drop_path_prob: the final drop-path probability; the Trainer calls `on_epoch_start`,
            which raises it linearly from 0 (`drop_path_max * epoch / epochs`).
        genotype: the cells (DARTS-V2).
    """

    checkpoint_block_types: tuple[type[nn.Module], ...] = (Cell,)
    """The blocks `nettle.nn.checkpointing.checkpoint_blocks` recomputes."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        conv: str | None = None,
        channels: int = 36,
        layers: int = 20,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
        genotype: Genotype = DARTS_V2,
    ) -> None:
        super().__init__()
        conv_class = get_conv_class(conv if conv is not None else "Sep")
        self.drop_path_prob = self.drop_path_max = drop_path_prob
        self.aux_logits: torch.Tensor | None = None
        c_curr = 3 * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        self.reduction_indices = [layers // 3, 2 * layers // 3]
        reduction_prev, c_aux = False, c_prev
        for i in range(layers):
            reduction = i in self.reduction_indices
            if reduction:
                c_curr *= 2
            cell = Cell(
                genotype, conv_class, c_prev_prev, c_prev, c_curr, reduction, reduction_prev
            )
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.reduction_indices[1]:
                c_aux = c_prev
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        # attention maps: the outputs of the cells just before each reduction cell
        self.at_layers = [f"cells.{i - 1}" for i in self.reduction_indices]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """The drop-path schedule: linear from 0 to `drop_path_max` over training."""
        self.drop_path_prob = self.drop_path_max * epoch / max(epochs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.reduction_indices[1] and self.auxiliary_head is not None and self.training:
                self.aux_logits = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1))


@MODELS.register("darts")
def darts(
    num_classes: int = 10,
    in_channels: int = 3,
    conv: str | None = None,
    channels: int = 36,
    layers: int = 20,
    auxiliary: bool = False,
    drop_path_prob: float = 0.0,
) -> DARTS:
    """The DARTS-V2 CIFAR network (see `DARTS`); `conv=None` means `Sep`."""
    return DARTS(num_classes, in_channels, conv, channels, layers, auxiliary, drop_path_prob)
