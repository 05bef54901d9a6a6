"""`Sep` and the depthwise-then-1x1 pattern that most substitutes share (Gray et al. 2019).

Separable Layers Enable Structured Efficient Linear Substitutions (Gray, Crowley, Storkey 2019,
arXiv:1906.00859): a k x k convolution is replaced by a dense depthwise k x k convolution (Ci*k^2
weights, carrying stride, padding and dilation) followed by a 1x1 map Ci -> Co, and only the 1x1
map is given a structure (low rank, hashed, ACDC, tensor decomposition). A 1x1 convolution needs
no depthwise part: the structured 1x1 map then carries the stride and padding itself.

`DepthwisePointwise` is the shared base: it holds the depthwise part (or none for k = 1), and
gives every subclass `to_dense()` (the equivalent `nn.Conv2d`, all substitutes being linear) from
the subclass's `matrix()` (the Co x Ci map of the 1x1 part). `separable_split` is the nearest
depthwise-separable factorisation of a dense kernel, used by the `from_dense` constructors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES

__all__ = [
    "DepthwisePointwise",
    "Separable",
    "check_no_setting",
    "conv_signature",
    "depthwise",
    "separable_split",
]


def check_no_setting(setting: float | None, name: str) -> None:
    """Raise `ValueError` when a substitute that takes no setting is given one."""
    if setting is not None:
        raise ValueError(
            f"substitute {name!r} takes no setting (use plain {name!r}), got {setting}"
        )


def depthwise(
    channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Conv2d:
    """A depthwise k x k convolution without bias (`groups = channels`)."""
    return nn.Conv2d(
        channels,
        channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups=channels,
        bias=False,
        device=device,
        dtype=dtype,
    )


def separable_split(weight: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The nearest depthwise-separable factorisation of a dense kernel (Co, Ci, k, k).

    For every input channel i, the best rank-1 approximation (SVD) of the Co x k^2 slice
    `W[:, i]` gives a depthwise kernel `K_i` (unit norm) and the column `P[:, i]` of the 1x1
    map, so that `W[o, i] ~= P[o, i] * K_i`; exact when the kernel is separable.

    Returns:
        The depthwise weight (Ci, 1, k, k), or `None` for a 1x1 kernel, and the matrix P (Co, Ci).
    """
    c_out, c_in, kh, kw = weight.shape
    if kh * kw == 1:
        return None, weight[:, :, 0, 0]
    slices = weight.permute(1, 0, 2, 3).reshape(c_in, c_out, kh * kw)  # (Ci, Co, k*k)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    kernel = vh[:, 0, :].reshape(c_in, 1, kh, kw)
    matrix = (u[:, :, 0] * s[:, :1]).t()  # (Co, Ci)
    return kernel, matrix


class DepthwisePointwise(nn.Module):
    """Base of the depthwise (k > 1) + structured 1x1 substitutes.

    Subclasses build their 1x1 part and implement `matrix()` (the Co x Ci map it applies per
    pixel) and `forward`, calling `spatial(x)` first: the depthwise convolution for k > 1, or for
    k = 1 the zero padding and striding of the 1x1 map, so that the 1x1 part always runs at
    stride 1 on the output grid. Bias, if any, is `self.bias` (overridable by `output_bias`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, kernel_size, stride, dilation) < 1 or padding < 0:
            raise ValueError(
                f"invalid convolution shape: {in_channels} -> {out_channels}, kernel "
                f"{kernel_size}, stride {stride}, padding {padding}, dilation {dilation}"
            )
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.depthwise = (
            depthwise(in_channels, kernel_size, stride, padding, dilation, device, dtype)
            if kernel_size > 1
            else None
        )

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial part: depthwise conv (k > 1) or padding and striding (k = 1)."""
        if self.depthwise is not None:
            return self.depthwise(x)
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return x

    def matrix(self) -> torch.Tensor:
        """The Co x Ci map the 1x1 part applies to every pixel."""
        raise NotImplementedError

    def output_bias(self) -> torch.Tensor | None:
        """The bias added to the output (None if there is none)."""
        bias = getattr(self, "bias", None)
        return bias if isinstance(bias, torch.Tensor) else None

    def depthwise_macs(self, output: torch.Tensor) -> int:
        """Multiply-adds of the depthwise part for this output, `Ci*k^2*S_out*N` (0 if k = 1)."""
        if self.depthwise is None:
            return 0
        n, _, h, w = output.shape
        return n * h * w * self.in_channels * self.kernel_size**2

    @torch.no_grad()
    def separable_form(self) -> nn.Module:
        """The equivalent plain layers: depthwise conv (k > 1) and a 1x1 `nn.Conv2d`.

        The 1x1 holds `matrix()` and the bias; for k = 1 it carries stride and padding. The
        deployable form of the substitutes that rebuild their 1x1 map from other parameters.
        """
        matrix = self.matrix()
        bias = self.output_bias()
        k1 = self.depthwise is None
        pointwise = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            1,
            self.stride if k1 else 1,
            self.padding if k1 else 0,
            bias=bias is not None,
            device=matrix.device,
            dtype=matrix.dtype,
        )
        pointwise.weight.copy_(matrix[:, :, None, None])
        if bias is not None:
            pointwise.bias.copy_(bias)
        if k1:
            return pointwise
        spatial = depthwise(
            self.in_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            matrix.device,
            matrix.dtype,
        )
        spatial.weight.copy_(self.depthwise.weight)
        return nn.Sequential(spatial, pointwise)

    @torch.no_grad()
    def to_dense(self) -> nn.Conv2d:
        """The equivalent dense `nn.Conv2d` (same stride, padding, dilation and bias)."""
        matrix = self.matrix()
        bias = self.output_bias()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=bias is not None,
            device=matrix.device,
            dtype=matrix.dtype,
        )
        weight = matrix[:, :, None, None]
        if self.depthwise is not None:
            weight = weight * self.depthwise.weight[:, 0][None]  # (Co, Ci, k, k)
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv


class Separable(DepthwisePointwise):
    """`Sep`: depthwise k x k (k > 1) then a dense pointwise 1x1 (Chollet 2017).

    The uncompressed reference of DARTS. Parameters `Ci*k^2*[k>1] + Ci*Co (+Co)`.
    Cost: `(Ci*k^2*[k>1] + Ci*Co) * S_out` multiply-adds (the reference's count), bias additions
    apart; one formula covers the block (its children are not counted again).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as `nn.Conv2d`.
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
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, device, dtype
        )
        self.pointwise = nn.Conv2d(
            in_channels, out_channels, 1, bias=bias, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.spatial(x))

    def matrix(self) -> torch.Tensor:
        return self.pointwise.weight[:, :, 0, 0]

    def output_bias(self) -> torch.Tensor | None:
        return self.pointwise.bias

    @classmethod
    @torch.no_grad()
    def from_dense(cls, conv: nn.Conv2d) -> Separable:
        """The nearest separable layer to a dense conv (`separable_split`; exact for 1x1)."""
        new = cls(**conv_signature(conv), device=conv.weight.device, dtype=conv.weight.dtype)
        kernel, matrix = separable_split(conv.weight)
        if kernel is not None:
            new.depthwise.weight.copy_(kernel)
        new.pointwise.weight.copy_(matrix[:, :, None, None])
        if conv.bias is not None:
            new.pointwise.bias.copy_(conv.bias)
        return new


def conv_signature(conv: nn.Conv2d) -> dict:
    """The square, ungrouped `nn.Conv2d` arguments of `conv` (ValueError otherwise)."""
    args = {"kernel_size": conv.kernel_size, "stride": conv.stride, "dilation": conv.dilation}
    args["padding"] = conv.padding
    if conv.groups != 1 or isinstance(conv.padding, str):
        raise ValueError("from_dense needs an ungrouped conv with numeric padding")
    out = {"in_channels": conv.in_channels, "out_channels": conv.out_channels}
    for key, value in args.items():
        if len(set(value)) != 1:
            raise ValueError(f"from_dense needs a square conv, got {key} {value}")
        out[key] = value[0]
    out["bias"] = conv.bias is not None
    return out


@register_formula(Separable)
def _separable_cost(module: Separable, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    macs = module.depthwise_macs(output) + n * h * w * module.in_channels * c
    return OpCount(macs=macs, bias=n * c * h * w if module.pointwise.bias is not None else 0)


@SUBSTITUTES.register("sep")
def sep(
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
) -> Separable:
    """`Sep` (takes no setting): depthwise k x k (k > 1) then a dense 1x1."""
    check_no_setting(setting, "Sep")
    return Separable(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, device, dtype
    )
