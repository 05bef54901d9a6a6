"""`ACDC` / `ACDC_n`: stacked ACDC structured-efficient layers (Moczulski et al. 2016,
arXiv:1511.05946) as a convolution substitute, as in Gray et al. 2019 (gngdb/pytorch-acdc).

k > 1: a dense depthwise k x k convolution (carries stride, padding, dilation), then the
structured 1x1 map; k = 1: the structured map carries the stride and padding. The map is square
(N x N): for Co > Ci the input is padded with copies of its first channels until Ci' divides Co
and tiled Co / Ci' times; for Co < Ci (Ci % Co == 0) blocks of Ci / Co consecutive output
channels are summed. Each factor applies, per pixel, `a * x -> DCT -> d * . -> riffle -> IDCT`
with orthonormal DCTs computed through the FFT (`dct.py`); the riffle puts even-indexed channels
first. When a batch has more positions than channels, the chain is applied once to the N basis
vectors and the resulting N x N map is applied as a 1x1 convolution (cheaper, same function);
otherwise every position goes through the FFT chain. As in the reference, `ACDC_n` builds n - 1 factors (`ACDC` = 12
requested, 11 factors); a, d ~ N(1, 0.01^2).

Parameters `Ci*k^2*[k>1] + 2*N*(n - 1)`. Cost (the reference's count.py rule): per position and
factor `4N + 5N*log2(N)` multiply-adds, plus the depthwise conv. The true count uses the map's
true output size; the reference counted strided k > 1 layers at their *input* size, which the
formula reports as `reference_macs` for the `deficient-efficient` convention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.dct import dct, idct
from nettle.nn.substitutes.separable import depthwise

__all__ = ["ACDC", "riffle"]


def riffle(x: torch.Tensor) -> torch.Tensor:
    """Permute the last dimension: even indices first, then odd ones."""
    return torch.cat([x[..., ::2], x[..., 1::2]], dim=-1)


def _expansion(c_in: int, c_out: int) -> int:
    """Channels to append so that the (padded) input width divides the output width."""
    a = 0
    while c_out % (c_in + a):
        a += 1
    return a


class ACDC(nn.Module):
    """A stack of `factors` ACDC layers applied to every pixel (see the module docstring)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        factors: int = 11,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if factors < 1:
            raise ValueError(f"ACDC needs at least one factor (ACDC_n with n >= 2), got {factors}")
        if out_channels < in_channels and in_channels % out_channels:
            raise ValueError(
                f"ACDC: {in_channels} input channels do not sum into {out_channels} outputs"
            )
        dd = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.stride, self.padding = stride, padding
        self.depthwise: nn.Module = (
            depthwise(in_channels, kernel_size, stride, padding, dilation, **dd)
            if kernel_size > 1
            else nn.Identity()
        )
        self.expand = _expansion(in_channels, out_channels) if out_channels > in_channels else 0
        self.tile = out_channels // (in_channels + self.expand) if out_channels > in_channels else 1
        self.width = max(out_channels, in_channels + self.expand)
        self.A = nn.Parameter(torch.empty(factors, self.width, **dd).normal_(1.0, 1e-2))
        self.D = nn.Parameter(torch.empty(factors, self.width, **dd).normal_(1.0, 1e-2))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None

    @property
    def factors(self) -> int:
        return self.A.shape[0]

    def structured(self, x: torch.Tensor) -> torch.Tensor:
        """The N x N structured map applied along the last dimension of `x` (..., N)."""
        for layer in range(self.factors):
            x = idct(riffle(dct(x * self.A[layer]) * self.D[layer]))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)
        if self.kernel_size == 1 and (self.stride > 1 or self.padding > 0):
            p = self.padding
            x = F.pad(x, (p, p, p, p))[:, :, :: self.stride, :: self.stride]
        if self.expand:
            x = torch.cat([x, x[:, : self.expand]], dim=1)
        if self.tile > 1:
            x = x.repeat(1, self.tile, 1, 1)
        n, _, h, w = x.shape
        if n * h * w > self.width:
            # many positions: push the N basis vectors through the FFT chain once and apply the
            # resulting N x N map as a 1x1 convolution (cheaper than N*H*W transforms)
            eye = torch.eye(self.width, device=x.device, dtype=x.dtype)
            y = F.conv2d(x, self.structured(eye).t()[:, :, None, None])
        else:
            y = self.structured(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (N, width, H, W)
        if self.out_channels < self.width:
            n, _, h, w = y.shape
            y = y.reshape(n, self.out_channels, self.width // self.out_channels, h, w).sum(2)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    def compressed_parameters(self) -> list[nn.Parameter]:
        return [self.A, self.D]


@register_formula(ACDC)
def _acdc_cost(module: ACDC, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, _, h, w = output.shape
    width = module.width
    per_position = module.factors * (4 * width + 5 * width * math.log2(width)) if width > 1 else 0
    k = module.kernel_size
    dw = n * h * w * module.in_channels * k * k if k > 1 else 0
    ref_spatial = inputs[0].shape[-2] * inputs[0].shape[-1] if k > 1 else h * w
    positions = n * h * w
    if positions > width:  # the map is built from the basis, then applied densely
        executed = dw + round(width * per_position) + positions * width * width
    else:
        executed = dw + round(positions * per_position)
    return OpCount(
        macs=dw + round(positions * per_position),
        executed_macs=executed,
        reference_macs=dw + round(n * ref_spatial * per_position),
        bias=n * h * w * module.out_channels if module.bias is not None else 0,
    )


@SUBSTITUTES.register("acdc")
def acdc(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> ACDC:
    """`ACDC` (12 requested layers) or `ACDC_n`: n - 1 ACDC factors after a depthwise conv."""
    n = 12 if setting is None else round(setting)
    return ACDC(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, n - 1, **dd
    )
