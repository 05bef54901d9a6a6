"""Tensor-decomposed substitutes: `TensorTrain_s`, `Tucker_s`, `CP_s` (Gray et al. 2019).

k > 1: a dense depthwise k x k convolution (carries stride, padding, dilation), then a 1x1
convolution whose Co x Ci matrix is held decomposed; k = 1: only the decomposed 1x1 (carrying
stride and padding). As the reference, the matrix (flattened row-major) is viewed as a 3-way
tensor (d1, d2, d3) (`tensor_dims`) and the setting s scales the ranks per dimension:
TT ranks `max(1, round(s * min(d_i, d_i+1)))`, Tucker ranks `max(1, round(s * d_i))`, CP rank
`max(1, round(s * min(d)))`. The reference's parameter shapes are kept (Tucker keeps its core in
tensor-train form with ranks `min(d1, t2*t3)` and `min(t3, d1*t2)`, an artefact of the library
it used), so parameter counts match its figures.

The forward pass rebuilds the Co x Ci matrix from the factors once (a cost independent of the
batch, `executed_macs` includes it) and applies it as a 1x1 convolution: since the 3-way view
mixes input and output indices, contracting the factors with the activations directly is not
cheaper. Counted multiply-adds equal those of a depthwise-separable layer (the reference's rule).
Initialisation: a dense 1x1 weight U(-1/sqrt(Ci), 1/sqrt(Ci)) decomposed (TT-SVD, truncated
HOSVD); CP factors are random with the same variance. `from_dense` decomposes a trained 1x1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.separable import depthwise

__all__ = ["Decomposed1x1", "tensor_dims", "tt_svd"]


def _smallest_divisor_at_least(n: int, m: int) -> int:
    if n < m:
        return n
    return next(d for d in range(max(m, 1), n + 1) if n % d == 0)


def tensor_dims(c_out: int, c_in: int) -> tuple[int, int, int]:
    """The reference's 3-way view of a Co x Ci matrix, e.g. 640 x 640 -> (80, 80, 64)."""
    nel = c_out * c_in
    q = math.exp(math.log(nel) / 3)
    m = round(q)
    if abs(m - q) < 1e-6:
        return m, m, m
    d1 = _smallest_divisor_at_least(nel, m)
    d2 = _smallest_divisor_at_least(nel // d1, m)
    return d1, d2, nel // (d1 * d2)


def _truncated(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    r = min(rank, s.numel())
    left = u[:, :r]
    right = s[:r, None] * vh[:r]
    if r < rank:  # pad with zeros so the shapes are the requested ones
        left = torch.cat([left, left.new_zeros(left.shape[0], rank - r)], 1)
        right = torch.cat([right, right.new_zeros(rank - r, right.shape[1])], 0)
    return left, right


def tt_svd(t: torch.Tensor, ranks: tuple[int, int]) -> list[torch.Tensor]:
    """TT cores (1, d1, r1), (r1, d2, r2), (r2, d3, 1) of a 3-way tensor by truncated SVDs."""
    d1, d2, d3 = t.shape
    r1, r2 = ranks
    g1, rest = _truncated(t.reshape(d1, d2 * d3), r1)
    g2, g3 = _truncated(rest.reshape(r1 * d2, d3), r2)
    return [g1.reshape(1, d1, r1), g2.reshape(r1, d2, r2), g3.reshape(r2, d3, 1)]


def _tt_full(cores: list[torch.Tensor]) -> torch.Tensor:
    a, b, c = cores
    return torch.einsum("xir,rjs,sky->ijk", a, b, c)


class Decomposed1x1(nn.Module):
    """Depthwise (k > 1) then a 1x1 conv with a TT, Tucker or CP decomposed weight."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        kind: str = "tt",
        scale: float = 0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if kind not in ("tt", "tucker", "cp"):
            raise ValueError(f"decomposition must be tt, tucker or cp, got {kind!r}")
        dd = {"device": device, "dtype": dtype}
        self.kind, self.scale = kind, scale
        self.in_channels, self.out_channels = in_channels, out_channels
        self.k, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.depthwise: nn.Module = (
            depthwise(in_channels, kernel_size, stride, padding, dilation, **dd)
            if kernel_size > 1
            else nn.Identity()
        )
        self.dims = tensor_dims(out_channels, in_channels)
        bound = 1.0 / math.sqrt(in_channels)
        dense = torch.empty(out_channels, in_channels, **dd).uniform_(-bound, bound)
        self.factors = nn.ParameterList(nn.Parameter(f) for f in self._decompose(dense))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None

    def ranks(self) -> tuple[int, ...]:
        """Requested ranks from the setting (before the reference's clamping)."""
        d = self.dims
        s = self.scale
        if self.kind == "tt":
            return tuple(max(1, round(s * min(d[i], d[i + 1]))) for i in range(2))
        if self.kind == "tucker":
            return tuple(max(1, round(s * di)) for di in d)
        return (max(1, round(s * min(d))),)

    def _decompose(self, dense: torch.Tensor) -> list[torch.Tensor]:
        d1, d2, d3 = self.dims
        t = dense.reshape(d1, d2, d3).float()
        if self.kind == "tt":
            r1, r2 = self.ranks()
            out = tt_svd(t, (min(r1, d1, d2 * d3), min(r2, d3, d1 * d2)))
        elif self.kind == "tucker":
            t1, t2, t3 = self.ranks()
            us = [
                torch.linalg.svd(t.movedim(i, 0).reshape(t.shape[i], -1), full_matrices=False)[0][
                    :, :r
                ]
                for i, r in enumerate((t1, t2, t3))
            ]
            core = torch.einsum("ijk,ia,jb,kc->abc", t, *us)
            core_ranks = (min(d1, t2 * t3), min(t3, d1 * t2))
            out = [*us, *tt_svd(core, core_ranks)]
        else:
            (r,) = self.ranks()
            std = dense.std() / (r**0.5) if dense.numel() > 1 else dense.abs().mean()
            per = float(std) ** (1 / 3)
            out = [torch.randn(di, r) * per for di in self.dims]
        return [f.to(dense.dtype) for f in out]

    def matrix(self) -> torch.Tensor:
        """The Co x Ci weight rebuilt from the factors."""
        f = list(self.factors)
        if self.kind == "tt":
            full = _tt_full(f)
        elif self.kind == "tucker":
            core = _tt_full(f[3:])
            full = torch.einsum("abc,ia,jb,kc->ijk", core, f[0], f[1], f[2])
        else:
            full = torch.einsum("ir,jr,kr->ijk", *f)
        return full.reshape(self.out_channels, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.matrix()[:, :, None, None]
        x = self.depthwise(x)
        if self.k == 1:
            return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation)
        return F.conv2d(x, w, self.bias)

    def compressed_parameters(self) -> list[nn.Parameter]:
        return list(self.factors)

    def reconstruction_macs(self) -> int:
        """Multiply-adds of one `matrix()` rebuild."""
        f = [p.shape for p in self.factors]
        d1, d2, d3 = self.dims
        if self.kind == "tt":
            return f[0][1] * f[0][2] * f[1][1] * f[1][2] + d1 * d2 * f[1][2] * d3
        if self.kind == "tucker":
            (t1, t2, t3), r1, r2 = [p[1] for p in f[:3]], f[3][2], f[4][2]
            core = t1 * r1 * t2 * r2 + t1 * t2 * r2 * t3
            return core + d1 * t1 * t2 * t3 + d1 * d2 * t2 * t3 + d1 * d2 * d3 * t3
        return d1 * d2 * d3 * f[0][1] * 2

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, kind: str, scale: float) -> Decomposed1x1:
        """Decompose a trained dense 1x1 convolution (exact at full rank for TT and Tucker)."""
        if conv.kernel_size != (1, 1) or conv.groups != 1:
            raise ValueError("from_dense needs an ungrouped 1x1 convolution")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            1,
            conv.stride[0],
            conv.padding[0],
            conv.dilation[0],
            conv.bias is not None,
            kind,
            scale,
        )
        with torch.no_grad():
            for p, f in zip(new.factors, new._decompose(conv.weight.detach()[:, :, 0, 0])):
                p.copy_(f)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new


@register_formula(Decomposed1x1)
def _decomposed_cost(module: Decomposed1x1, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    dw = n * h * w * module.in_channels * module.k * module.k if module.k > 1 else 0
    macs = dw + n * h * w * module.in_channels * c
    return OpCount(
        macs=macs,
        executed_macs=macs + module.reconstruction_macs(),
        bias=n * h * w * c if module.bias is not None else 0,
    )


def _register(name: str, kind: str, label: str) -> None:
    def build(
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=False,
        setting=None,
        **dd,
    ) -> Decomposed1x1:
        if setting is None or setting <= 0:
            raise ValueError(f"substitute {label!r} needs a positive rank scale, e.g. {label}_0.3")
        return Decomposed1x1(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            bias,
            kind,
            setting,
            **dd,
        )

    build.__doc__ = f"`{label}_s`: depthwise + {kind} decomposed 1x1 with rank scale s."
    SUBSTITUTES.add(name, build)


_register("tensortrain", "tt", "TensorTrain")
_register("tucker", "tucker", "Tucker")
_register("cp", "cp", "CP")
