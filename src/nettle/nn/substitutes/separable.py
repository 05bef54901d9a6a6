"""`Sep`: depthwise-separable convolution (Chollet 2017; the dense reference of DARTS).

k > 1: a depthwise k x k convolution (carries stride, padding, dilation) then a pointwise 1x1
Ci -> Co. k = 1: only the pointwise convolution, carrying stride and padding. Parameters
`Ci*k^2*[k>1] + Ci*Co (+Co)`; the children are ordinary convolutions, so the cost counter sees
exactly the reference's `(Ci*k^2*[k>1] + Ci*Co) * S_out` multiply-adds.
"""

from __future__ import annotations

import torch
from torch import nn

from nettle.nn.substitutes.base import SUBSTITUTES

__all__ = ["Separable", "depthwise"]


def depthwise(c: int, k: int, stride: int, padding: int, dilation: int, **dd) -> nn.Conv2d:
    """A depthwise k x k convolution without bias."""
    return nn.Conv2d(c, c, k, stride, padding, dilation, groups=c, bias=False, **dd)


class Separable(nn.Module):
    """Depthwise k x k (if k > 1) followed by a pointwise 1x1 convolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if kernel_size > 1:
            self.depthwise: nn.Module = depthwise(
                in_channels, kernel_size, stride, padding, dilation, **dd
            )
            self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias, **dd)
        else:
            self.depthwise = nn.Identity()
            self.pointwise = nn.Conv2d(
                in_channels, out_channels, 1, stride, padding, dilation, bias=bias, **dd
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


@SUBSTITUTES.register("sep")
def sep(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> Separable:
    """`Sep` (no setting)."""
    if setting is not None:
        raise ValueError(f"substitute 'Sep' takes no setting, got {setting}")
    return Separable(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, **dd)
