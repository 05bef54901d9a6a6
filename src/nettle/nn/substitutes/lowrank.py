"""Low-rank substitutes: `Generic_r` (linear bottleneck) and `LR_r` (tied transpose).

`Generic_r` (Gray et al. 2019, "RF"): rank `R = int(r * max(Ci, Co))`; k > 1: depthwise k x k,
then 1x1 Ci -> R (`lowrank_contract`) and 1x1 R -> Co (`lowrank_expand`, with the bias); k = 1:
the contraction carries stride and padding. Parameters `Ci*k^2*[k>1] + R*(Ci + Co)`; counted as
`(Ci*k^2*[k>1] + R*(Ci + Co)) * S_out`. `from_dense` initialises a 1x1 from a dense 1x1 by a
truncated SVD (exact when `R >= min(Ci, Co)`).

`LR_r`: needs `Co % Ci == 0`, `u = Co / Ci`, `R = int(r * max(Ci, Co))`; one matrix V (R x u*Ci):
depthwise (k > 1) -> tile the channels u times -> 1x1 with V -> 1x1 with V^T (+ bias), i.e. the
symmetric map V^T V on the tiled input. Parameters `Ci*k^2*[k>1] + R*u*Ci`; counted (as the
reference) `Ci*k^2*[k>1]*S_out + 2*u*Ci*R*S_out`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.separable import depthwise

__all__ = ["GenericLowRank", "TiedLowRank"]


def _rank(setting: float | None, name: str, c_in: int, c_out: int) -> int:
    if setting is None or setting <= 0:
        raise ValueError(f"substitute {name!r} needs a positive rank scale, e.g. {name}_0.1")
    return max(1, int(setting * max(c_in, c_out)))


class GenericLowRank(nn.Module):
    """Depthwise (k > 1) then a rank-R factorised 1x1 convolution."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        rank: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.rank = rank
        if kernel_size > 1:
            self.depthwise: nn.Module = depthwise(
                in_channels, kernel_size, stride, padding, dilation, **dd
            )
            self.lowrank_contract = nn.Conv2d(in_channels, rank, 1, bias=False, **dd)
        else:
            self.depthwise = nn.Identity()
            self.lowrank_contract = nn.Conv2d(
                in_channels, rank, 1, stride, padding, dilation, bias=False, **dd
            )
        self.lowrank_expand = nn.Conv2d(rank, out_channels, 1, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowrank_expand(self.lowrank_contract(self.depthwise(x)))

    def compressed_parameters(self) -> list[nn.Parameter]:
        return list(self.lowrank_contract.parameters()) + list(self.lowrank_expand.parameters())

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, setting: float) -> GenericLowRank:
        """A rank-`int(setting * max(Ci, Co))` copy of a dense 1x1 conv (truncated SVD)."""
        if conv.kernel_size != (1, 1) or conv.groups != 1:
            raise ValueError("from_dense needs an ungrouped 1x1 convolution")
        rank = _rank(setting, "Generic", conv.in_channels, conv.out_channels)
        new = cls(
            conv.in_channels,
            conv.out_channels,
            1,
            conv.stride[0],
            conv.padding[0],
            conv.dilation[0],
            conv.bias is not None,
            rank,
        )
        u, s, vh = torch.linalg.svd(conv.weight.detach()[:, :, 0, 0], full_matrices=False)
        keep = min(rank, s.numel())
        root = s[:keep].sqrt()
        with torch.no_grad():
            new.lowrank_contract.weight.zero_()
            new.lowrank_expand.weight.zero_()
            new.lowrank_contract.weight[:keep, :, 0, 0] = root[:, None] * vh[:keep]
            new.lowrank_expand.weight[:, :keep, 0, 0] = u[:, :keep] * root[None, :]
            if conv.bias is not None:
                new.lowrank_expand.bias.copy_(conv.bias)
        return new


@SUBSTITUTES.register("generic")
def generic(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> GenericLowRank:
    """`Generic_r`: rank `int(r * max(Ci, Co))` bottleneck after a depthwise conv."""
    rank = _rank(setting, "Generic", in_channels, out_channels)
    return GenericLowRank(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rank, **dd
    )


class TiedLowRank(nn.Module):
    """Depthwise (k > 1), channel tiling, then the tied pair V and V^T of 1x1 maps."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        rank: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if out_channels % in_channels:
            raise ValueError(
                f"substitute 'LR' needs out_channels to be a multiple of in_channels, got "
                f"{in_channels} -> {out_channels}"
            )
        dd = {"device": device, "dtype": dtype}
        self.tile = out_channels // in_channels
        self.k, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.depthwise: nn.Module = (
            depthwise(in_channels, kernel_size, stride, padding, dilation, **dd)
            if kernel_size > 1
            else nn.Identity()
        )
        self.lowrank = nn.Parameter(torch.empty(rank, out_channels, **dd))
        nn.init.normal_(self.lowrank, 0.0, (2.0 / (rank * out_channels)) ** 0.25)
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x).repeat(1, self.tile, 1, 1)  # (N, u*Ci, H, W)
        v = self.lowrank[:, :, None, None]
        if self.k == 1:
            h = F.conv2d(x, v, None, self.stride, self.padding, self.dilation)
        else:
            h = F.conv2d(x, v)
        return F.conv2d(h, self.lowrank.t()[:, :, None, None], self.bias)

    def compressed_parameters(self) -> list[nn.Parameter]:
        return [self.lowrank]


@register_formula(TiedLowRank)
def _tied_cost(module: TiedLowRank, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, _, h, w = output.shape
    rank, width = module.lowrank.shape
    dw = module.depthwise
    depth = (
        n * h * w * dw.in_channels * dw.kernel_size[0] * dw.kernel_size[1]
        if isinstance(dw, nn.Conv2d)
        else 0
    )
    bias = n * h * w * width if module.bias is not None else 0
    return OpCount(macs=depth + 2 * n * h * w * width * rank, bias=bias)


@SUBSTITUTES.register("lr")
def lr(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> TiedLowRank:
    """`LR_r`: the tied-transpose low-rank map of rank `int(r * max(Ci, Co))`."""
    rank = _rank(setting, "LR", in_channels, out_channels)
    return TiedLowRank(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rank, **dd
    )
