"""HashedNet substitutes (Chen et al. 2015, arXiv:1504.04788), as in Gray et al. 2019.

`HashedConv2d` keeps a vector of `budget` real weights; a fixed random index table (a buffer,
saved with the model) maps every position of the dense kernel to one of them, and the forward
pass gathers the dense kernel and convolves with it. So the parameters fall but the executed
multiply-adds are those of the dense convolution; the cost formula reports the dense cost as
both theoretical (the reference's convention) and executed. As the reference, the layer always
has a bias and uses no sign hash; unlike it, every real weight can be drawn (the reference's
index table never uses the last one).

- `Hashed_s`: budget `int(s * Co*Ci*k^2/groups)`, one hashed k x k conv.
- `HashedDecimate`: budget a tenth of the dense kernel.
- `SepHashed_s`: dense depthwise k x k (k > 1) + hashed 1x1 with budget `int(s * Ci*Co)`.
- `SepHashedDecimate`: total budget a tenth of the dense k x k kernel: dense depthwise + hashed
  1x1 with the rest (the reference's final version).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.separable import depthwise

__all__ = ["HashedConv2d", "HashedSeparable"]


class HashedConv2d(nn.Module):
    """A convolution whose kernel is gathered from `budget` shared weights."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        budget: int,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        full = math.prod(self.shape)
        if not 1 <= budget <= full:
            raise ValueError(f"hashed budget must be in [1, {full}] for this layer, got {budget}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        bound = 1.0 / math.sqrt(in_channels // groups * kernel_size * kernel_size)
        self.hashed_weight = nn.Parameter(torch.empty(budget, **dd).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd).uniform_(-bound, bound))
        index = torch.randint(0, budget, (full,), device=device)
        self.register_buffer("index", index)

    def weight(self) -> torch.Tensor:
        """The dense kernel (Co, Ci/groups, k, k) gathered from the budget."""
        return self.hashed_weight[self.index].view(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.weight(), self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def compressed_parameters(self) -> list[nn.Parameter]:
        return [self.hashed_weight]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel={self.shape[2]}, budget={self.hashed_weight.numel()}"


@register_formula(HashedConv2d)
def _hashed_cost(module: HashedConv2d, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    dense = n * h * w * math.prod(module.shape)
    return OpCount(macs=dense, executed_macs=dense, bias=n * c * h * w)


class HashedSeparable(nn.Module):
    """Dense depthwise k x k (k > 1) then a hashed 1x1 convolution."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        budget: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if kernel_size > 1:
            self.depthwise: nn.Module = depthwise(
                in_channels, kernel_size, stride, padding, dilation, **dd
            )
            self.hashed = HashedConv2d(in_channels, out_channels, 1, budget, **dd)
        else:
            self.depthwise = nn.Identity()
            self.hashed = HashedConv2d(
                in_channels, out_channels, 1, budget, stride, padding, dilation, **dd
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hashed(self.depthwise(x))

    def compressed_parameters(self) -> list[nn.Parameter]:
        return list(self.hashed.parameters())


def _fraction(setting: float | None, name: str) -> float:
    if setting is None or not 0 < setting <= 1:
        raise ValueError(f"substitute {name!r} needs a budget fraction in (0, 1], e.g. {name}_0.1")
    return setting


def _no_setting(setting: float | None, name: str) -> None:
    if setting is not None:
        raise ValueError(f"substitute {name!r} takes no setting, got {setting}")


@SUBSTITUTES.register("hashed")
def hashed(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> HashedConv2d:
    """`Hashed_s`: a hashed k x k conv with a fraction s of the dense weights."""
    budget = max(
        1, int(_fraction(setting, "Hashed") * (out_channels * in_channels * kernel_size**2))
    )
    return HashedConv2d(
        in_channels, out_channels, kernel_size, budget, stride, padding, dilation, **dd
    )


@SUBSTITUTES.register("hasheddecimate")
def hashed_decimate(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> HashedConv2d:
    """`HashedDecimate`: a hashed k x k conv with a tenth of the dense weights."""
    _no_setting(setting, "HashedDecimate")
    budget = max(1, out_channels * in_channels * kernel_size**2 // 10)
    return HashedConv2d(
        in_channels, out_channels, kernel_size, budget, stride, padding, dilation, **dd
    )


@SUBSTITUTES.register("sephashed")
def sep_hashed(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> HashedSeparable:
    """`SepHashed_s`: depthwise + hashed 1x1 with `int(s * Ci*Co)` weights."""
    budget = max(1, int(_fraction(setting, "SepHashed") * out_channels * in_channels))
    return HashedSeparable(
        in_channels, out_channels, kernel_size, stride, padding, dilation, budget, **dd
    )


@SUBSTITUTES.register("sephasheddecimate")
def sep_hashed_decimate(
    in_channels,
    out_channels,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    bias=False,
    setting=None,
    **dd,
) -> HashedSeparable:
    """`SepHashedDecimate`: a tenth of the dense k x k weights, depthwise + hashed 1x1."""
    _no_setting(setting, "SepHashedDecimate")
    total = out_channels * in_channels * kernel_size**2 // 10
    rest = total - (in_channels * kernel_size**2 if kernel_size > 1 else 0)
    if rest < 1:
        raise ValueError(
            f"SepHashedDecimate: a tenth of the dense kernel ({total}) does not cover the "
            f"depthwise conv of {in_channels}x{kernel_size}x{kernel_size}"
        )
    return HashedSeparable(
        in_channels, out_channels, kernel_size, stride, padding, dilation, rest, **dd
    )
