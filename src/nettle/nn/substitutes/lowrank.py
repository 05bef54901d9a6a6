"""Low-rank substitutes: `Generic_r` (linear bottleneck, "RF") and `LR_r` (tied transpose).

Both follow Gray et al. 2019 (arXiv:1906.00859): a depthwise k x k convolution for k > 1 (none
for k = 1), then a rank-R 1x1 map with `R = int(r * max(Ci, Co))` (truncation, at least 1).

- `Generic_r` (`GenericLowRank`): 1x1 Ci -> R (`lowrank_contract`, no bias) then 1x1 R -> Co
  (`lowrank_expand`, with the bias). Parameters `Ci*k^2*[k>1] + R*(Ci + Co)`.
- `LR_r` (`TiedLowRank`): needs `Co % Ci == 0`, `u = Co / Ci`; one matrix V (R x Co) and the
  map `V^T V` applied to the input tiled u times (symmetric positive semi-definite for u = 1).
  Parameters `Ci*k^2*[k>1] + R*Co`.

Example:
    >>> from nettle.nn.substitutes import create_conv
    >>> layer = create_conv("Generic_0.1", 160, 320, 3, stride=2, padding=1)
    >>> layer.rank, sum(p.numel() for p in layer.parameters())
    (32, 16800)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.separable import DepthwisePointwise, conv_signature, separable_split

__all__ = ["GenericLowRank", "TiedLowRank", "lowrank_rank"]


def lowrank_rank(setting: float | None, name: str, c_in: int, c_out: int) -> int:
    """`R = int(r * max(Ci, Co))`, at least 1; a missing or non-positive r raises ValueError."""
    if setting is None or not setting > 0:
        raise ValueError(
            f"substitute {name!r} needs a positive rank scale r (R = int(r * max(Ci, Co))), "
            f"e.g. {name}_0.1; got {setting}"
        )
    return max(1, int(setting * max(c_in, c_out)))


class GenericLowRank(DepthwisePointwise):
    """`Generic_r`: depthwise k x k (k > 1), then 1x1 Ci -> R and 1x1 R -> Co.

    Cost (the reference's count): `(Ci*k^2*[k>1] + R*(Ci + Co)) * S_out` multiply-adds, the
    factored cost that is also executed; bias additions apart. One formula for the block.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as `nn.Conv2d`.
        rank: the bottleneck width R.
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
        rank: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, device, dtype
        )
        dd = {"device": device, "dtype": dtype}
        self.rank = rank
        self.lowrank_contract = nn.Conv2d(in_channels, rank, 1, bias=False, **dd)
        self.lowrank_expand = nn.Conv2d(rank, out_channels, 1, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowrank_expand(self.lowrank_contract(self.spatial(x)))

    def matrix(self) -> torch.Tensor:
        return self.lowrank_expand.weight[:, :, 0, 0] @ self.lowrank_contract.weight[:, :, 0, 0]

    def output_bias(self) -> torch.Tensor | None:
        return self.lowrank_expand.bias

    def compressed_parameters(self) -> list[nn.Parameter]:
        """The factors (the reference's `lowrank_*` weight-decay group)."""
        return [*self.lowrank_contract.parameters(), *self.lowrank_expand.parameters()]

    @classmethod
    @torch.no_grad()
    def from_dense(cls, conv: nn.Conv2d, setting: float) -> GenericLowRank:
        """`Generic_setting` initialised from a dense conv by a truncated SVD.

        The kernel is first split into depthwise and 1x1 parts (`separable_split`); the 1x1
        matrix is truncated to rank R. Exact for a 1x1 conv (or a separable kernel) when
        `R >= min(Ci, Co)`.
        """
        sig = conv_signature(conv)
        rank = lowrank_rank(setting, "Generic", sig["in_channels"], sig["out_channels"])
        new = cls(**sig, rank=rank, device=conv.weight.device, dtype=conv.weight.dtype)
        kernel, matrix = separable_split(conv.weight)
        if kernel is not None:
            new.depthwise.weight.copy_(kernel)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        keep = min(rank, s.numel())
        root = s[:keep].sqrt()
        new.lowrank_contract.weight.zero_()
        new.lowrank_expand.weight.zero_()
        new.lowrank_contract.weight[:keep, :, 0, 0] = root[:, None] * vh[:keep]
        new.lowrank_expand.weight[:, :keep, 0, 0] = u[:, :keep] * root[None, :]
        if conv.bias is not None:
            new.lowrank_expand.bias.copy_(conv.bias)
        return new


@register_formula(GenericLowRank)
def _generic_cost(module: GenericLowRank, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    factored = n * h * w * module.rank * (module.in_channels + c)
    has_bias = module.lowrank_expand.bias is not None
    return OpCount(macs=module.depthwise_macs(output) + factored, bias=n * c * h * w * has_bias)


class TiedLowRank(DepthwisePointwise):
    """`LR_r`: depthwise k x k (k > 1), tile the channels u times, then V and V^T as 1x1 maps.

    The per-pixel map is `V^T V T`, T the tiling (u stacked identities). Executed as
    `V^T ((V T) x)` with `V T` (R x Ci, the sum of V's u column blocks) formed first, so the
    tiled tensor is never built. Cost (the reference's count): `Ci*k^2*[k>1]*S_out +
    2*u*Ci*R*S_out`; executed: `Ci*k^2*[k>1]*S_out + (Ci + Co)*R*S_out + R*Co`.
    Init: V ~ N(0, (2 / (R*Co))^(1/2)) per entry, so that `V^T V` has He-like variance 2/Co
    off the diagonal.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as `nn.Conv2d`
            (`out_channels` a multiple of `in_channels`).
        rank: R.
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
        rank: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if out_channels % in_channels:
            raise ValueError(
                f"substitute 'LR' needs out_channels to be a multiple of in_channels, got "
                f"{in_channels} -> {out_channels}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, device, dtype
        )
        dd = {"device": device, "dtype": dtype}
        self.rank, self.tile = rank, out_channels // in_channels
        std = (2.0 / (rank * out_channels)) ** 0.25
        self.lowrank = nn.Parameter(torch.empty(rank, out_channels, **dd).normal_(0.0, std))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None

    def _folded(self) -> torch.Tensor:
        """V T: the u column blocks of V summed, (R, Ci)."""
        return self.lowrank.reshape(self.rank, self.tile, self.in_channels).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.conv2d(self.spatial(x), self._folded()[:, :, None, None])  # (N, R, H, W)
        return F.conv2d(h, self.lowrank.t()[:, :, None, None], self.bias)

    def matrix(self) -> torch.Tensor:
        return self.lowrank.t() @ self._folded()

    def compressed_parameters(self) -> list[nn.Parameter]:
        """V (the reference's `lowrank` weight-decay group)."""
        return [self.lowrank]

    @classmethod
    @torch.no_grad()
    def from_dense(cls, conv: nn.Conv2d, setting: float) -> TiedLowRank:
        """`LR_setting` initialised from a dense conv: the nearest PSD map of rank R.

        After `separable_split`, the target Co x Co map is `M0 = P T^T / u` (so `M0 T = P`);
        V keeps the R largest non-negative eigenpairs of its symmetric part. Exact when `M0` is
        symmetric positive semi-definite of rank <= R (e.g. u = 1 and `P = B^T B`).
        """
        sig = conv_signature(conv)
        rank = lowrank_rank(setting, "LR", sig["in_channels"], sig["out_channels"])
        new = cls(**sig, rank=rank, device=conv.weight.device, dtype=conv.weight.dtype)
        kernel, matrix = separable_split(conv.weight)
        if kernel is not None:
            new.depthwise.weight.copy_(kernel)
        target = matrix.repeat(1, new.tile) / new.tile  # (Co, u*Ci) = (Co, Co)
        evals, evecs = torch.linalg.eigh((target + target.t()) / 2)
        keep = min(rank, evals.numel())
        top = evals.flip(0)[:keep].clamp(min=0)
        new.lowrank.zero_()
        new.lowrank[:keep] = top.sqrt()[:, None] * evecs.flip(1)[:, :keep].t()
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
        return new


@register_formula(TiedLowRank)
def _tied_cost(module: TiedLowRank, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    positions, dw = n * h * w, module.depthwise_macs(output)
    executed = dw + positions * (module.in_channels + c) * module.rank + module.rank * c
    return OpCount(
        macs=dw + 2 * positions * c * module.rank,
        executed_macs=executed,
        bias=positions * c if module.bias is not None else 0,
    )


@SUBSTITUTES.register("generic")
def generic(
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
) -> GenericLowRank:
    """`Generic_r`: a rank `int(r * max(Ci, Co))` bottleneck after a depthwise conv."""
    rank = lowrank_rank(setting, "Generic", in_channels, out_channels)
    return GenericLowRank(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rank, device, dtype
    )


@SUBSTITUTES.register("lr")
def lr(
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
) -> TiedLowRank:
    """`LR_r`: the tied map `V^T V` of rank `int(r * max(Ci, Co))` after a depthwise conv."""
    rank = lowrank_rank(setting, "LR", in_channels, out_channels)
    return TiedLowRank(
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rank, device, dtype
    )
