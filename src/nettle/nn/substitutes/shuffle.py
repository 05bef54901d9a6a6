"""`Shuffle_g`: a linear ShuffleNet block (Zhang et al. 2018) as a convolution substitute.

Bottleneck `b = Co // 4`; the group count starts at g and is decremented until Ci, Co and b are
all divisible by it (so it can differ between layers, as in Gray et al. 2019). Layers: grouped
1x1 Ci -> b at the input resolution, channel shuffle with g groups, depthwise k x k b -> b
carrying stride/padding/dilation, grouped 1x1 b -> Co (+bias); no normalisation or ReLU inside.
Parameters `Ci*b/g + b*k^2 + b*Co/g`; counted `(Ci*b/g)*S_in + (b*k^2 + b*Co/g)*S_out`. All of
its parameters are compressed (scaled weight decay).
"""

from __future__ import annotations

import torch
from torch import nn

from nettle.nn.substitutes.base import SUBSTITUTES

__all__ = ["LinearShuffleNet", "shuffle_groups"]


def shuffle_groups(c_in: int, c_out: int, g: int) -> int:
    """The largest group count <= g that divides Ci, Co and the bottleneck Co // 4."""
    b = max(1, c_out // 4)
    g = max(1, int(g))
    while c_in % g or c_out % g or b % g:
        g -= 1
    return g


class LinearShuffleNet(nn.Module):
    """Grouped 1x1 -> channel shuffle -> depthwise k x k -> grouped 1x1."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        groups: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        b = max(1, out_channels // 4)
        g = shuffle_groups(in_channels, out_channels, groups)
        self.groups = g
        self.shuffle_reduce = nn.Conv2d(in_channels, b, 1, groups=g, bias=False, **dd)
        self.shuffle = nn.ChannelShuffle(g)
        self.shuffle_depthwise = nn.Conv2d(
            b, b, kernel_size, stride, padding, dilation, groups=b, bias=False, **dd
        )
        self.shuffle_expand = nn.Conv2d(b, out_channels, 1, groups=g, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle_expand(self.shuffle_depthwise(self.shuffle(self.shuffle_reduce(x))))

    def compressed_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())


@SUBSTITUTES.register("shuffle")
def shuffle(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> LinearShuffleNet:
    """`Shuffle_g`: linear ShuffleNet block with up to g groups."""
    if setting is None or setting < 1:
        raise ValueError("substitute 'Shuffle' needs a group count >= 1, e.g. Shuffle_4")
    return LinearShuffleNet(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, int(setting), **dd
    )
