"""Group normal-Jeffreys layers for Bayesian compression.

Louizos, Ullrich & Welling, "Bayesian Compression for Deep Learning", NeurIPS 2017
(arXiv:1705.08665), the group normal-Jeffreys prior, also known as group variational dropout.
Each group (an input unit of a Linear layer, an output channel of a convolution) has a
multiplicative variable `z ~ N(z_mu, exp(z_logvar))`; each weight has `w | z ~ N(w_mu,
exp(w_logvar))`. Training uses the local reparameterisation trick; a group whose dropout rate
`log alpha = z_logvar - log(z_mu^2)` is large can be pruned, and the posterior variance of the
surviving weights says how many bits each needs.

Differences from the authors' tutorial code, on purpose: the KL of the weights uses the
correct Gaussian KL for convolutions as for Linear (the tutorial's convolution squares the
variance), the posterior of a convolution broadcasts `z` over the output channel, and the
deterministic (compressed) forward of a convolution keeps stride, padding and dilation.
Shapes: `LinearGroupNJ` maps (N, *, in) -> (N, *, out); `Conv2dGroupNJ` maps (N, C, H, W) like
`nn.Conv2d` (groups and string paddings included). `from_dense` builds either from a trained
dense layer: its weights and bias become the means, `z_mu = 1`, so the converted layer's
deterministic output equals the dense layer's.

Parameters of a layer with bias: `2 W + 2 O + 2 G` for W weights, O outputs and G group
variables (input units of a Linear layer, output channels of a convolution): the means and
log-variances of each, i.e. the dense layer's `W + O` plus `W + O + 2 G`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = ["BayesianLayer", "Conv2dGroupNJ", "LinearGroupNJ", "bayesian_kl", "clip_variances"]

# Molchanov et al. 2017, eq. 14: the fit of KL(q(z) || p(z)) for the log-uniform prior
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
_EPS = 1e-8


def _reparameterize(mu: torch.Tensor, logvar: torch.Tensor, sample: bool) -> torch.Tensor:
    if not sample:
        return mu
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def _gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed."""
    return (0.5 * (logvar.exp() + mu.pow(2) - 1.0) - 0.5 * logvar).sum()


class BayesianLayer(nn.Module):
    """Shared parameters and maths of the group normal-Jeffreys layers.

    Subclasses create `weight_mu`, `weight_logvar`, `bias_mu`, `bias_logvar`, `z_mu`,
    `z_logvar` and define `group_shape`: the shape that broadcasts `z` against the weight.
    """

    clip_var: float | None
    deterministic: bool
    group_shape: tuple[int, ...]

    def _init_variational(self, fan_in: int) -> None:
        with torch.no_grad():
            self.weight_mu.normal_(0.0, 1.0 / math.sqrt(fan_in))
            self.z_mu.normal_(1.0, 1e-2)
            for p in (self.weight_logvar, self.z_logvar):
                p.normal_(-9.0, 1e-2)
            if self.bias_mu is not None:
                self.bias_mu.zero_()
                self.bias_logvar.normal_(-9.0, 1e-2)

    def _copy_dense(self, dense: nn.Linear | nn.Conv2d) -> None:
        """Means from a dense layer's weights and bias; `z_mu = 1` (the dense function)."""
        with torch.no_grad():
            self.weight_mu.copy_(dense.weight)
            self.z_mu.fill_(1.0)
            if self.bias_mu is not None and dense.bias is not None:
                self.bias_mu.copy_(dense.bias)

    def log_alpha(self) -> torch.Tensor:
        """Log dropout rate of each group: `z_logvar - log(z_mu^2)`."""
        return self.z_logvar - torch.log(self.z_mu.pow(2) + _EPS)

    def kl_divergence(self) -> torch.Tensor:
        """KL(q || p) of this layer: the groups' (approximate) plus the weights' and biases'."""
        la = self.log_alpha()
        kl_z = -(_K1 * torch.sigmoid(_K2 + _K3 * la) - 0.5 * F.softplus(-la) - _K1).sum()
        kl = kl_z + _gaussian_kl(self.weight_mu, self.weight_logvar)
        if self.bias_mu is not None:
            kl = kl + _gaussian_kl(self.bias_mu, self.bias_logvar)
        return kl

    def clip_variances(self) -> None:
        """Clamp the weight and bias log-variances to at most `log(clip_var)` (if set)."""
        if not self.clip_var:
            return
        top = math.log(self.clip_var)
        with torch.no_grad():
            self.weight_logvar.clamp_(max=top)
            if self.bias_logvar is not None:
                self.bias_logvar.clamp_(max=top)

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the effective weight `w * z`."""
        z_mu = self.z_mu.view(self.group_shape)
        z_var = self.z_logvar.exp().view(self.group_shape)
        w_var = self.weight_logvar.exp()
        mean = self.weight_mu * z_mu
        var = z_mu.pow(2) * w_var + z_var * self.weight_mu.pow(2) + z_var * w_var
        return mean, var

    def _check_deterministic(self) -> None:
        if self.training:
            raise RuntimeError("deterministic (compressed) mode is for inference: call .eval()")

    def set_compressed(self, weight: torch.Tensor | None) -> None:
        """Use `weight` (pruned, reduced-precision posterior mean) in deterministic mode."""
        self.compressed_weight = None if weight is None else weight.detach().clone()

    def _deterministic_weight(self) -> torch.Tensor:
        self._check_deterministic()
        w = getattr(self, "compressed_weight", None)
        return w if w is not None else self.posterior()[0]


class LinearGroupNJ(BayesianLayer):
    """Linear layer with a group normal-Jeffreys prior on its input units.

    Args:
        in_features: input units (one group each).
        out_features: output units.
        bias: learn a (Gaussian) bias.
        clip_var: upper bound of the weight variances, applied by `clip_variances`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        clip_var: float | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.clip_var, self.deterministic = clip_var, False
        self.group_shape = (1, in_features)
        self.z_mu = nn.Parameter(torch.empty(in_features, **dd))
        self.z_logvar = nn.Parameter(torch.empty(in_features, **dd))
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features, **dd))
        self.weight_logvar = nn.Parameter(torch.empty(out_features, in_features, **dd))
        self.bias_mu = nn.Parameter(torch.empty(out_features, **dd)) if bias else None
        self.bias_logvar = nn.Parameter(torch.empty(out_features, **dd)) if bias else None
        self._init_variational(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deterministic:
            return F.linear(x, self._deterministic_weight(), self.bias_mu)
        z = _reparameterize(
            self.z_mu.expand_as(x), self.z_logvar.expand_as(x), sample=self.training
        )
        xz = x * z
        mean = F.linear(xz, self.weight_mu, self.bias_mu)
        bias_var = self.bias_logvar.exp() if self.bias_logvar is not None else None
        var = F.linear(xz.pow(2), self.weight_logvar.exp(), bias_var)
        return _reparameterize(mean, var.clamp_min(1e-16).log(), sample=self.training)

    @classmethod
    def from_dense(cls, dense: nn.Linear, clip_var: float | None = None) -> LinearGroupNJ:
        """The Bayesian version of `dense`, its weights and bias as the means."""
        w = dense.weight
        layer = cls(
            dense.in_features,
            dense.out_features,
            bias=dense.bias is not None,
            clip_var=clip_var,
            device=w.device,
            dtype=w.dtype,
        )
        layer._copy_dense(dense)
        return layer

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias_mu is not None}"


class Conv2dGroupNJ(BayesianLayer):
    """2-d convolution with a group normal-Jeffreys prior on its output channels.

    Args match `nn.Conv2d` (zero padding only), plus `clip_var`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        clip_var: float | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}, {out_channels} not divisible by {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.clip_var, self.deterministic = clip_var, False
        self.group_shape = (out_channels, 1, 1, 1)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.z_mu = nn.Parameter(torch.empty(out_channels, **dd))
        self.z_logvar = nn.Parameter(torch.empty(out_channels, **dd))
        self.weight_mu = nn.Parameter(torch.empty(shape, **dd))
        self.weight_logvar = nn.Parameter(torch.empty(shape, **dd))
        self.bias_mu = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        self.bias_logvar = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        self._init_variational(shape[1] * shape[2] * shape[3])

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deterministic:
            bias = self.bias_mu * self.z_mu if self.bias_mu is not None else None
            return self._conv(x, self._deterministic_weight(), bias)
        mean = self._conv(x, self.weight_mu, self.bias_mu)
        bias_var = self.bias_logvar.exp() if self.bias_logvar is not None else None
        var = self._conv(x.pow(2), self.weight_logvar.exp(), bias_var)
        n = x.shape[0]
        z = _reparameterize(
            self.z_mu.expand(n, -1), self.z_logvar.expand(n, -1), sample=self.training
        )[:, :, None, None]
        return _reparameterize(
            mean * z, (var * z.pow(2)).clamp_min(1e-16).log(), sample=self.training
        )

    @classmethod
    def from_dense(cls, dense: nn.Conv2d, clip_var: float | None = None) -> Conv2dGroupNJ:
        """The Bayesian version of `dense` (zero padding), its weights and bias as the means."""
        if dense.padding_mode != "zeros":
            raise ValueError(f"padding_mode {dense.padding_mode!r}: only 'zeros' is supported")
        w = dense.weight
        layer = cls(
            dense.in_channels,
            dense.out_channels,
            dense.kernel_size,
            stride=dense.stride,
            padding=dense.padding,
            dilation=dense.dilation,
            groups=dense.groups,
            bias=dense.bias is not None,
            clip_var=clip_var,
            device=w.device,
            dtype=w.dtype,
        )
        layer._copy_dense(dense)
        return layer

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}{groups}"
        )


def bayesian_kl(model: nn.Module) -> torch.Tensor:
    """Sum of the KL terms of every Bayesian layer in `model` (0 when there is none)."""
    terms = [m.kl_divergence() for m in model.modules() if isinstance(m, BayesianLayer)]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return torch.stack(terms).sum()


def clip_variances(model: nn.Module) -> None:
    """Apply `clip_variances` of every Bayesian layer in `model`."""
    for m in model.modules():
        if isinstance(m, BayesianLayer):
            m.clip_variances()
