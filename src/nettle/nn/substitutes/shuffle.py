"""`Shuffle_g`: a linear ShuffleNet block (Zhang et al. 2018, arXiv:1707.01083) as a substitute.

As in Gray et al. 2019 (arXiv:1906.00859): bottleneck `b = Co // 4`; the group count starts at
g and is decremented until Ci, Co and b are all divisible by it, separately for every layer (on
WRN-28-10 `Shuffle_3` is `Shuffle_2` everywhere). Layers: grouped 1x1 Ci -> b at the input
resolution, channel shuffle with g groups, depthwise k x k b -> b carrying stride, padding and
dilation (for k = 1 a 1x1 per-channel scaling that carries the stride), grouped 1x1 b -> Co
(+bias). No normalisation, activation or shortcut inside (the host network has its own).

Example:
    >>> from nettle.nn.substitutes import create_conv
    >>> layer = create_conv("Shuffle_4", 160, 160, 3, padding=1)
    >>> layer.groups, sum(p.numel() for p in layer.parameters())
    (4, 3560)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.cache import WeightCached, cacheable

__all__ = ["LinearShuffleNet", "channel_shuffle", "shuffle_groups"]


def shuffle_groups(c_in: int, c_out: int, g: int) -> int:
    """The largest group count <= g dividing Ci, Co and the bottleneck `Co // 4`."""
    b = max(1, c_out // 4)
    g = max(1, int(g))
    while c_in % g or c_out % g or b % g:
        g -= 1
    return g


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: channels viewed as (groups, C / groups), transposed, flattened.

    Output channel `j * groups + i` takes input channel `i * (C / groups) + j`.
    """
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class LinearShuffleNet(WeightCached):
    """Grouped 1x1 -> channel shuffle -> depthwise k x k -> grouped 1x1 (see module docstring).

    Parameters `Ci*b/g + b*k^2 + b*Co/g (+Co)`. Cost (the reference's count, also executed):
    `(Ci*b/g)*S_in + (b*k^2 + b*Co/g)*S_out` multiply-adds, the first 1x1 running at the input
    resolution; bias additions apart. One formula for the block. All parameters, the depthwise
    ones included, are compressed (the reference's `shuffle` weight-decay group).

    Inference: with g > 1, in eval mode without a gradient to record, the two grouped 1x1
    convs run as dense 1x1 convs of cached block-diagonal weights, the shuffle folded into the
    first one's rows (`cache.py`): g times their multiply-adds (still a few percent of the
    dense k x k conv), but no shuffle copy and no grouped 1x1, which were the slow parts on
    CPU. `fast_form()` is that in plain layers.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as `nn.Conv2d`.
        groups: the requested group count g (reduced per layer, see `shuffle_groups`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        groups: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        b = max(1, out_channels // 4)
        g = shuffle_groups(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.groups, self.bottleneck = g, b
        self.shuffle_reduce = nn.Conv2d(in_channels, b, 1, groups=g, bias=False, **dd)
        self.shuffle_depthwise = nn.Conv2d(
            b, b, kernel_size, stride, padding, dilation, groups=b, bias=False, **dd
        )
        self.shuffle_expand = nn.Conv2d(b, out_channels, 1, groups=g, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups > 1 and not isinstance(x, torch.fx.Proxy) and cacheable(self):
            reduce = self.cached_weight("reduce", self._dense_reduce)
            expand = self.cached_weight("expand", self._dense_expand)
            h = self.shuffle_depthwise(F.conv2d(x, reduce))
            return F.conv2d(h, expand, self.shuffle_expand.bias)
        h = channel_shuffle(self.shuffle_reduce(x), self.groups)
        return self.shuffle_expand(self.shuffle_depthwise(h))

    def _dense_reduce(self) -> torch.Tensor:
        """The first 1x1 as a dense (b, Ci, 1, 1) weight, rows in shuffled order."""
        w = self.shuffle_reduce.weight[:, :, 0, 0]
        reduce = torch.block_diag(*w.split(self.bottleneck // self.groups))
        return channel_shuffle(reduce[None, :, :, None], self.groups)[0].unsqueeze(-1)

    def _dense_expand(self) -> torch.Tensor:
        """The last 1x1 as a dense (Co, b, 1, 1) weight."""
        w = self.shuffle_expand.weight[:, :, 0, 0]
        return torch.block_diag(*w.split(self.out_channels // self.groups))[:, :, None, None]

    @torch.no_grad()
    def fast_form(self) -> nn.Module:
        """Plain layers of the inference path: dense 1x1 (shuffle folded), depthwise, dense 1x1."""
        reduce, expand = self._dense_reduce(), self._dense_expand()
        dd = {"device": reduce.device, "dtype": reduce.dtype}
        first = nn.Conv2d(self.in_channels, self.bottleneck, 1, bias=False, **dd)
        last = nn.Conv2d(
            self.bottleneck, self.out_channels, 1, bias=self.shuffle_expand.bias is not None, **dd
        )
        first.weight.copy_(reduce)
        last.weight.copy_(expand)
        if last.bias is not None:
            last.bias.copy_(self.shuffle_expand.bias)
        return nn.Sequential(first, copy.deepcopy(self.shuffle_depthwise), last)

    def compressed_parameters(self) -> list[nn.Parameter]:
        """Every parameter (the reference's `shuffle` weight-decay group)."""
        return list(self.parameters())

    @torch.no_grad()
    def to_dense(self) -> nn.Conv2d:
        """The equivalent dense `nn.Conv2d`."""
        reduce = torch.block_diag(
            *self.shuffle_reduce.weight[:, :, 0, 0].split(self.bottleneck // self.groups)
        )
        expand = torch.block_diag(
            *self.shuffle_expand.weight[:, :, 0, 0].split(self.out_channels // self.groups)
        )
        reduce = channel_shuffle(reduce[None, :, :, None], self.groups)[0, :, :, 0]  # (b, Ci)
        kernel = self.shuffle_depthwise.weight[:, 0]  # (b, k, k)
        weight = torch.einsum("ob,bkl,bi->oikl", expand, kernel, reduce)
        dw = self.shuffle_depthwise
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            dw.stride,
            dw.padding,
            dw.dilation,
            bias=self.shuffle_expand.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.copy_(self.shuffle_expand.bias)
        return conv


@register_formula(LinearShuffleNet)
def _shuffle_cost(module: LinearShuffleNet, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    h_in, w_in = inputs[0].shape[-2:]
    b, g, k = module.bottleneck, module.groups, module.kernel_size
    macs = n * h_in * w_in * (module.in_channels // g) * b + n * h * w * (b * k * k + b * (c // g))
    has_bias = module.shuffle_expand.bias is not None
    return OpCount(macs=macs, bias=n * c * h * w * has_bias)


@SUBSTITUTES.register("shuffle")
def shuffle(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    bias: bool = False,
    setting: float | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LinearShuffleNet:
    """`Shuffle_g`: a linear ShuffleNet block with at most g groups (an integer >= 1)."""
    if setting is None or setting < 1 or setting != int(setting):
        raise ValueError(
            f"substitute 'Shuffle' needs an integer group count g >= 1, e.g. Shuffle_4; got {setting}"
        )
    return LinearShuffleNet(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        bias,
        int(setting),
        device,
        dtype,
    )
