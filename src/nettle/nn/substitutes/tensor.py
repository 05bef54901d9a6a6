"""Tensor-decomposed substitutes: `TensorTrain_s`, `Tucker_s`, `CP_s` (Gray et al. 2019), and
their order-4 forms `TensorTrain4_s`, `Tucker4_s`, `CP4_s`.

k > 1: a dense depthwise k x k convolution (carries stride, padding, dilation), then a 1x1
convolution whose Co x Ci matrix is held decomposed; k = 1: only the decomposed 1x1 (carrying
stride and padding). As in the reference the matrix, flattened row-major, is viewed as a 3-way
tensor (d1, d2, d3) (`tensor_dims`, e.g. 640 x 640 -> (80, 80, 64)) and the setting s scales
the ranks per dimension (`tt_ranks`, `tucker_ranks`, `cp_rank` in `decompositions.py`). The
reference's parameter shapes are kept, so parameter counts match its figures: TT cores
(1, d1, r1), (r1, d2, r2), (r2, d3, 1); Tucker factors (d_i, t_i) plus the core in TT form with
ranks `min(d1, t2*t3)`, `min(t3, d1*t2)`; CP factors (d_i, r). CP was dropped by the reference
(too weak); it is kept here for completeness.

Order: the reference settled on a 3-way view after trying 4 (its log: WRN-28-10
`TensorTrain_0.8` with d = 4 has 671,050 parameters, `Tucker_0.4` 685,723; d = 3 did better).
The order is part of the name, the setting stays the rank scale: `TensorTrain_0.8` is order 3,
`TensorTrain4_0.8` order 4 (likewise `Tucker4_s`, `CP4_s`); the same rules apply per
dimension (`tensor_dims(Co, Ci, 4)`, e.g. 640 x 640 -> (25, 32, 32, 16)).

Execution: the forward pass rebuilds the Co x Ci matrix from the factors once per call (a cost
independent of the batch, included in `executed_macs`) and applies it as a dense 1x1
convolution. The 3-way view mixes input and output channel indices (d1 is a block of output
channels, d3 a block of input channels, d2 mixes both), so contracting the factors with the
activations pixel by pixel is not cheaper than the dense 1x1 at these shapes, and rebuilding
costs far less than one batch's 1x1 (e.g. TT 640 x 640: 9.2M vs 26M per 8x8 image). In eval
mode without a gradient to record the rebuilt matrix is cached (`cache.py`), so inference runs
at the separable layer's speed; `fast_form()` gives the equivalent plain layers.

Initialisation: a dense 1x1 weight U(-1/sqrt(Ci), 1/sqrt(Ci)) decomposed (TT-SVD, truncated
HOSVD), as in the reference; CP factors are random with the same entry variance.
`from_dense(conv, setting)` decomposes a trained dense conv instead.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes import decompositions as dec
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.cache import WeightCached
from nettle.nn.substitutes.separable import DepthwisePointwise, conv_signature, separable_split

__all__ = ["CP", "Decomposed1x1", "TensorTrain", "Tucker"]


class Decomposed1x1(WeightCached, DepthwisePointwise):
    """Base: depthwise k x k (k > 1) then a 1x1 conv with a decomposed Co x Ci weight.

    Cost: counted as the separable layer, `(Ci*k^2*[k>1] + Ci*Co) * S_out` multiply-adds, the
    reference's rule whatever the rank; executed: that plus one rebuild of the matrix.
    Subclasses set `label` and implement `decompose`, `rebuild` and `rebuild_macs`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as `nn.Conv2d`.
        scale: the rank scale s (> 0).
        order: the number of tensor dimensions the matrix is viewed with (3, the reference's).
    """

    label: ClassVar[str] = ""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        scale: float = 0.5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        order: int = 3,
    ) -> None:
        if not scale > 0:
            raise ValueError(
                f"substitute {self.label!r} needs a positive rank scale s, e.g. "
                f"{self.label}_0.3; got {scale}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, device, dtype
        )
        dd = {"device": device, "dtype": dtype}
        self.scale = scale
        self.dims = dec.tensor_dims(out_channels, in_channels, order)
        bound = 1.0 / math.sqrt(in_channels)
        dense = torch.empty(out_channels, in_channels, **dd).uniform_(-bound, bound)
        self.factors = nn.ParameterList(nn.Parameter(f) for f in self._init_factors(dense))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None

    def _init_factors(self, dense: torch.Tensor) -> list[torch.Tensor]:
        return self._decomposed(dense)

    def _decomposed(self, matrix: torch.Tensor) -> list[torch.Tensor]:
        """Factors of a Co x Ci matrix, computed in float32 at least, in the matrix's dtype."""
        work = matrix.reshape(self.dims)
        if work.dtype not in (torch.float32, torch.float64):
            work = work.float()
        return [f.to(matrix.dtype) for f in self.decompose(work)]

    def decompose(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Factors of the (d1, d2, d3) tensor at this layer's ranks."""
        raise NotImplementedError

    def rebuild(self) -> torch.Tensor:
        """The (d1, d2, d3) tensor of the factors."""
        raise NotImplementedError

    def rebuild_macs(self) -> int:
        """Multiply-adds of one `rebuild`."""
        raise NotImplementedError

    def matrix(self) -> torch.Tensor:
        return self.rebuild().reshape(self.out_channels, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.cached_weight("weight", lambda: self.matrix()[:, :, None, None])
        return F.conv2d(self.spatial(x), weight, self.bias)

    def fast_form(self) -> nn.Module:
        """The deployable form: depthwise conv and the rebuilt 1x1 (`separable_form`)."""
        return self.separable_form()

    def compressed_parameters(self) -> list[nn.Parameter]:
        """The factors (the reference's `weight_core`/`weight_u` weight-decay group)."""
        return list(self.factors)

    @classmethod
    @torch.no_grad()
    def from_dense(cls, conv: nn.Conv2d, setting: float, order: int = 3) -> Decomposed1x1:
        """`<Label>_setting` initialised by decomposing a dense conv's weight.

        The kernel is split into depthwise and 1x1 parts (`separable_split`, exact for 1x1 or
        separable kernels), then the 1x1 matrix is decomposed. At full rank (s = 1 for TT and
        Tucker; a CP rank reaching the product of the two smallest dims) it is exact.
        """
        w = conv.weight
        new = cls(
            **conv_signature(conv), scale=setting, device=w.device, dtype=w.dtype, order=order
        )
        kernel, matrix = separable_split(w)
        if kernel is not None:
            new.depthwise.weight.copy_(kernel)
        for p, f in zip(new.factors, new._decomposed(matrix.contiguous()), strict=True):
            p.copy_(f)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
        return new

    def extra_repr(self) -> str:
        shapes = [tuple(f.shape) for f in self.factors]
        return f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, dims={self.dims}, factors={shapes}"


class TensorTrain(Decomposed1x1):
    """`TensorTrain_s`: cores (1, d1, r1), (r1, d2, r2), (r2, d3, 1), `r_i` from `tt_ranks`
    (one more core per extra order)."""

    label = "TensorTrain"

    def decompose(self, t: torch.Tensor) -> list[torch.Tensor]:
        return dec.tt_svd(t, dec.tt_ranks(self.dims, self.scale))

    def rebuild(self) -> torch.Tensor:
        return dec.tt_full(list(self.factors))

    def rebuild_macs(self) -> int:
        return dec.tt_full_macs([f.shape for f in self.factors])


class Tucker(Decomposed1x1):
    """`Tucker_s`: factors (d_i, t_i) and a TT core, ranks from `tucker_ranks`."""

    label = "Tucker"

    def decompose(self, t: torch.Tensor) -> list[torch.Tensor]:
        return dec.tucker_hosvd(t, *dec.tucker_ranks(self.dims, self.scale))

    def rebuild(self) -> torch.Tensor:
        return dec.tucker_full(list(self.factors))

    def rebuild_macs(self) -> int:
        return dec.tucker_full_macs([f.shape for f in self.factors])


class CP(Decomposed1x1):
    """`CP_s`: factors (d_i, r), r from `cp_rank`; random init, CP-ALS in `from_dense`."""

    label = "CP"

    def _init_factors(self, dense: torch.Tensor) -> list[torch.Tensor]:
        rank = dec.cp_rank(self.dims, self.scale)
        # a rebuilt entry sums `rank` products of d entries: match the dense init's variance
        # 1/(3 Ci), so each entry has variance (1/(3 Ci rank))^(1/d)
        std = (1.0 / (3 * self.in_channels * rank)) ** (1 / (2 * len(self.dims)))
        dd = {"device": dense.device, "dtype": dense.dtype}
        return [torch.randn(d, rank, **dd) * std for d in self.dims]

    def decompose(self, t: torch.Tensor) -> list[torch.Tensor]:
        return dec.cp_als(t, dec.cp_rank(self.dims, self.scale))

    def rebuild(self) -> torch.Tensor:
        return dec.cp_full(list(self.factors))

    def rebuild_macs(self) -> int:
        return dec.cp_full_macs([f.shape for f in self.factors])


@register_formula(Decomposed1x1)
def _decomposed_cost(module: Decomposed1x1, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    macs = module.depthwise_macs(output) + n * h * w * module.in_channels * c
    return OpCount(
        macs=macs,
        executed_macs=macs + module.rebuild_macs(),
        bias=n * c * h * w if module.bias is not None else 0,
    )


def _register(cls: type[Decomposed1x1], order: int) -> None:
    name = cls.label if order == 3 else f"{cls.label}{order}"

    def build(
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
    ) -> Decomposed1x1:
        if setting is None or not setting > 0:
            raise ValueError(
                f"substitute {name!r} needs a positive rank scale s, e.g. {name}_0.3; got {setting}"
            )
        shape = (in_channels, out_channels, kernel_size, stride, padding, dilation, bias)
        return cls(*shape, setting, device, dtype, order=order)

    build.__name__ = name.lower()
    build.__doc__ = (
        f"`{name}_s`: depthwise + a {cls.label} decomposed 1x1 (order {order}), rank scale s."
    )
    SUBSTITUTES.add(name, build)


for _cls in (TensorTrain, Tucker, CP):
    for _order in (3, 4):
        _register(_cls, _order)
del _cls, _order
