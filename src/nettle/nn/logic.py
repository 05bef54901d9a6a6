"""Logic-inspired units for robustness research: rectified logs, maxout, quadratic units.

Definitions follow the "newlogic" research code (Le, 2019-2020) behind "Deep fuzzy neural
networks": units that fire only on strong evidence and combine evidence like OR (max) and AND
(min).

- `ReLog`: `log_b(relu(x) + eps) + c`; the defaults (b=10, eps=0.01, c=2) give 0 at 0.
- `ReLog1p`: `log1p(b * relu(x)) / b` with `b = beta * strength`, where `strength` is annealed
  from ~0 by `step` per training forward pass up to 1, so the unit starts as a ReLU.
- `Maxout` / `MinMaxOut`: fold groups of channels with max (OR) and/or min (AND); widen the
  preceding layer by the folding factor to keep the output width (`folding_factor`).
- `QuadraticLinear` / `QuadraticConv2d`: `W x + b + Q x^2` with a signed `Q`.
- `EllipticalLinear` / `EllipticalConv2d`: `W x + b - a * (|Q| x^2) + a * gamma`, curvature `a`
  annealed from 0 to 1 (`models.py` of the research code, Jan 2020).
- `SphericalLinear` / `SphericalConv2d`: the elliptical unit with one `|q|` per output unit
  shared by all its inputs, `W x + b - a |q| sum(x^2) + a * gamma`: it fires inside a sphere.
  The research code's `notebooks/spherical_filters.ipynb` (Oct 2019) fixed the radius
  (`-a * mean(x^2) + a / 4` with `a = 1 / r0^2`); here `|q|` (that is, the radius) is learned.

Annealed quantities are buffers, so checkpoints restore them and resume stays exact.
Shapes: activations are elementwise; maxout folds dim 1 (channels or features).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EllipticalConv2d",
    "EllipticalLinear",
    "Maxout",
    "MinMaxOut",
    "QuadraticConv2d",
    "QuadraticExpansion",
    "QuadraticLinear",
    "ReLog",
    "ReLog1p",
    "SphericalConv2d",
    "SphericalLinear",
    "folding_factor",
    "maxout",
    "relog",
    "replace_relu",
]


def relog(
    x: torch.Tensor, base: float = 10.0, eps: float = 0.01, offset: float = 2.0
) -> torch.Tensor:
    """Rectified log `log_base(relu(x) + eps) + offset`."""
    return torch.log(F.relu(x) + eps) / math.log(base) + offset


class ReLog(nn.Module):
    """Rectified log unit, `log_b(relu(x) + eps) + c` (all three settable)."""

    def __init__(self, base: float = 10.0, eps: float = 0.01, offset: float = 2.0) -> None:
        super().__init__()
        if base <= 1 or eps <= 0:
            raise ValueError(f"ReLog needs base > 1 and eps > 0, got base={base}, eps={eps}")
        self.base, self.eps, self.offset = base, eps, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relog(x, self.base, self.eps, self.offset)

    def extra_repr(self) -> str:
        return f"base={self.base}, eps={self.eps}, offset={self.offset}"


class ReLog1p(nn.Module):
    """`log1p(b * relu(x)) / b` with `b = beta * strength`, strength annealed from ~0 to 1.

    Args:
        beta: the final strength of the log.
        step: increase of `strength` per forward pass in training mode.
        start: the initial strength (the effective `b` is floored at 1e-4, where the unit is a
            ReLU to within 1e-4 relative).
    """

    def __init__(self, beta: float = 2.0, step: float = 1e-3, start: float = 0.0) -> None:
        super().__init__()
        self.beta, self.step = beta, step
        self.register_buffer("strength", torch.tensor(float(start)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.step:
            with torch.no_grad():
                self.strength.add_(self.step).clamp_(max=1.0)
        b = torch.clamp(self.beta * self.strength, min=1e-4)
        return torch.log1p(b * F.relu(x)) / b

    def extra_repr(self) -> str:
        return f"beta={self.beta}, step={self.step}"


def maxout(x: torch.Tensor, k: int, mode: str = "max") -> torch.Tensor:
    """Fold dim 1 into groups of `k` consecutive units and take their max (or min)."""
    n, c = x.shape[:2]
    if c % k:
        raise ValueError(f"maxout: {c} channels do not fold into groups of {k}")
    grouped = x.reshape(n, c // k, k, *x.shape[2:])
    if mode == "max":
        return grouped.amax(dim=2)
    if mode == "min":
        return grouped.amin(dim=2)
    raise ValueError(f"maxout mode must be 'max' or 'min', got {mode!r}")


class Maxout(nn.Module):
    """Maxout (`mode="max"`, a logical OR) or min-out (`mode="min"`, AND) over `k` channels."""

    def __init__(self, k: int = 4, mode: str = "max") -> None:
        super().__init__()
        if k < 1 or mode not in ("max", "min"):
            raise ValueError(f"Maxout needs k >= 1 and mode 'max' or 'min', got {k}, {mode!r}")
        self.k, self.mode = k, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(x, self.k, self.mode)

    def extra_repr(self) -> str:
        return f"k={self.k}, mode={self.mode}"


class MinMaxOut(nn.Module):
    """Max over groups of `k_max`, then min over groups of `k_min` of those maxima."""

    def __init__(self, k_max: int = 4, k_min: int = 2) -> None:
        super().__init__()
        self.k_max, self.k_min = k_max, k_min

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(maxout(x, self.k_max, "max"), self.k_min, "min")

    def extra_repr(self) -> str:
        return f"k_max={self.k_max}, k_min={self.k_min}"


def folding_factor(mode: str | None, k_max: int = 4, k_min: int = 2) -> int:
    """How much wider a layer must be before `mode` ('', 'max', 'min', 'minmax') folds it."""
    factors = {None: 1, "": 1, "max": k_max, "min": k_min, "minmax": k_max * k_min}
    if mode not in factors:
        raise ValueError(f"unknown maxout mode {mode!r}; known: '', max, min, minmax")
    return factors[mode]


class _QuadraticMixin(nn.Module):
    """`W x + b + sign * curvature * (Q' x^2) + curvature * gamma` on top of a linear map."""

    elliptical: bool = False

    def _setup(self, q_shape: tuple[int, ...], spherical: bool, step: float, dd: dict) -> None:
        self.spherical, self.step, self.gamma = spherical, step, 1.0
        self.q = nn.Parameter(torch.full(q_shape, 0.0 if not self.elliptical else 0.1, **dd))
        start = 0.0 if self.elliptical else 1.0
        self.register_buffer("curvature", torch.tensor(start, **dd))

    def _anneal(self) -> None:
        if self.training and self.elliptical and self.step:
            with torch.no_grad():
                self.curvature.add_(self.step).clamp_(max=1.0)

    def _q(self) -> torch.Tensor:
        return self.q.abs() if self.elliptical else self.q


class QuadraticLinear(nn.Linear, _QuadraticMixin):
    """`W x + b + Q x^2` (signed `Q`, initialised to 0 so the layer starts linear)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        spherical: bool = False,
        step: float = 1e-3,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(in_features, out_features, bias, **dd)
        self._setup((out_features, 1 if spherical else in_features), spherical, step, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._anneal()
        q = self._q().expand(self.out_features, self.in_features)
        quad = F.linear(x.pow(2), q)
        sign = -1.0 if self.elliptical else 1.0
        extra = self.curvature * self.gamma if self.elliptical else 0.0
        return F.linear(x, self.weight, self.bias) + sign * self.curvature * quad + extra


class EllipticalLinear(QuadraticLinear):
    """`W x + b - a (|Q| x^2) + a * gamma`: a unit that fires inside an ellipsoid (gamma = 1)."""

    elliptical = True


class SphericalLinear(EllipticalLinear):
    """`W x + b - a |q| sum_i x_i^2 + a * gamma`: one learned curvature per output unit.

    Parameters: the linear layer's plus one `q` per output unit (`out_features`).
    Shapes: (N, in_features) -> (N, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        step: float = 1e-3,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, True, step, device, dtype)


class QuadraticConv2d(nn.Conv2d, _QuadraticMixin):
    """Convolution plus a quadratic term `Q * x^2` (signed `Q`, starts at 0)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        spherical: bool = False,
        step: float = 1e-3,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias, **dd)
        shape = (out_channels, 1, 1, 1) if spherical else tuple(self.weight.shape)
        self._setup(shape, spherical, step, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._anneal()
        q = self._q().expand_as(self.weight)
        quad = F.conv2d(x.pow(2), q, None, self.stride, self.padding, self.dilation, self.groups)
        sign = -1.0 if self.elliptical else 1.0
        extra = self.curvature * self.gamma if self.elliptical else 0.0
        return self._conv_forward(x, self.weight, self.bias) + sign * self.curvature * quad + extra


class EllipticalConv2d(QuadraticConv2d):
    """Convolutional elliptical unit: `conv(x) - a * conv(x^2, |Q|) + a * gamma`."""

    elliptical = True


class SphericalConv2d(EllipticalConv2d):
    """Convolutional spherical unit: `conv(x) - a |q| (sum of x^2 over the window) + a * gamma`.

    Parameters: the convolution's plus one `q` per output channel.
    Shapes: (N, in_channels, H, W) -> (N, out_channels, H', W') as the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        step: float = 1e-3,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, bias, True, step, device, dtype
        )


class QuadraticExpansion(nn.Module):
    """Quadratic-kernel input expansion: `[x, x^2]` along dim 1 (doubles the channels).

    The elementwise degree-2 features of a quadratic kernel without cross terms, so the next
    linear layer can fit axis-aligned ellipsoids and spheres.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.pow(2)], dim=1)


def replace_relu(model: nn.Module, make: type[nn.Module] | object) -> int:
    """Replace every `nn.ReLU` in `model` by a fresh `make()`; returns how many were replaced."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, name, make())
                count += 1
    return count
