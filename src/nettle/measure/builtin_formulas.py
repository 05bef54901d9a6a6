"""Cost formulas of torch's own layers, registered on import of `nettle.measure`.

All counts are for the whole batch of the call. Multiply-adds (`macs`) exclude bias additions,
which go to `bias`. Conventions (see `conventions.py`) choose which categories are reported.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from nettle.measure.formulas import OpCount, register_formula

__all__: list[str] = []


def _numel(t: Any) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _first(inputs: tuple[Any, ...]) -> Any:
    return inputs[0] if inputs else None


def _conv(module: nn.modules.conv._ConvNd, inputs: tuple, output: torch.Tensor) -> OpCount:
    x = _first(inputs)
    k = math.prod(module.kernel_size)
    g = module.groups
    n = output.shape[0] if output.dim() == len(module.kernel_size) + 2 else 1
    out_spatial = math.prod(output.shape[-len(module.kernel_size) :])
    if module.transposed:
        in_spatial = math.prod(x.shape[-len(module.kernel_size) :])
        macs = n * in_spatial * module.in_channels * (module.out_channels // g) * k
    else:
        macs = n * out_spatial * module.out_channels * (module.in_channels // g) * k
    bias = n * module.out_channels * out_spatial if module.bias is not None else 0
    return OpCount(macs=macs, bias=bias)


for _t in (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
):
    register_formula(_t)(_conv)


@register_formula(nn.Linear)
def _linear(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> OpCount:
    rows = _numel(output) // module.out_features
    return OpCount(
        macs=rows * module.in_features * module.out_features,
        bias=rows * module.out_features if module.bias is not None else 0,
    )


@register_formula(nn.Bilinear)
def _bilinear(module: nn.Bilinear, inputs: tuple, output: torch.Tensor) -> OpCount:
    rows = _numel(output) // module.out_features
    macs = rows * module.out_features * module.in1_features * (module.in2_features + 1)
    return OpCount(macs=macs, bias=rows * module.out_features if module.bias is not None else 0)


def _norm(module: nn.Module, inputs: tuple, output: torch.Tensor) -> OpCount:
    affine = bool(getattr(module, "affine", False) or getattr(module, "elementwise_affine", False))
    return OpCount(norm=_numel(_first(inputs)) * (2 if affine else 1))


for _t in (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
):
    register_formula(_t)(_norm)


@register_formula(nn.ReLU)
def _relu(module: nn.Module, inputs: tuple, output: torch.Tensor) -> OpCount:
    return OpCount(relu=_numel(_first(inputs)))


def _activation(module: nn.Module, inputs: tuple, output: torch.Tensor) -> OpCount:
    return OpCount(activation=_numel(_first(inputs)))


for _t in (
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Tanhshrink,
    nn.Threshold,
    nn.GLU,
):
    register_formula(_t)(_activation)


_POOL_DIMS = {
    nn.MaxPool1d: 1,
    nn.AvgPool1d: 1,
    nn.MaxPool2d: 2,
    nn.AvgPool2d: 2,
    nn.MaxPool3d: 3,
    nn.AvgPool3d: 3,
}


def _pool(module: nn.Module, inputs: tuple, output: torch.Tensor) -> OpCount:
    """Output elements x window size (the kernel-window ops)."""
    k = module.kernel_size
    nd = next(d for t, d in _POOL_DIMS.items() if isinstance(module, t))
    window = k**nd if isinstance(k, int) else math.prod(k)
    return OpCount(pool=_numel(output) * window)


for _t in _POOL_DIMS:
    register_formula(_t)(_pool)


def _adaptive_pool(module: nn.Module, inputs: tuple, output: torch.Tensor) -> OpCount:
    return OpCount(pool=_numel(_first(inputs)))


for _t in (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
):
    register_formula(_t)(_adaptive_pool)

_UPSAMPLE_OPS = {
    "nearest": 1,
    "nearest-exact": 1,
    "linear": 2,
    "bilinear": 4,
    "bicubic": 16,
    "trilinear": 8,
}


@register_formula(nn.Upsample)
def _upsample(module: nn.Upsample, inputs: tuple, output: torch.Tensor) -> OpCount:
    return OpCount(upsample=_numel(output) * _UPSAMPLE_OPS.get(module.mode, 1))


def _free(module: nn.Module, inputs: tuple, output: Any) -> OpCount:
    return OpCount()


for _t in (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.PixelShuffle,
    nn.ChannelShuffle,
    nn.Embedding,
):
    register_formula(_t)(_free)


# --- recurrent layers -------------------------------------------------------------------------

_GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4, nn.RNNCell: 1, nn.GRUCell: 3, nn.LSTMCell: 4}
# per hidden unit and step: (activations, other elementwise ops) after the gate mat-vecs
_POINTWISE = {1: (1, 0), 3: (3, 4), 4: (5, 4)}


def _steps(module: nn.RNNBase, x: Any) -> int:
    """Number of (time step, sequence) pairs processed."""
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes.sum())
    if x.dim() == 2:  # unbatched (T, I)
        return x.shape[0]
    return x.shape[0] * x.shape[1]


@register_formula(nn.RNNBase)
def _rnn(module: nn.RNNBase, inputs: tuple, output: Any) -> OpCount:
    gates = _GATES.get(type(module), 1)
    h = module.hidden_size
    p = getattr(module, "proj_size", 0) or 0
    h_out = p or h
    dirs = 2 if module.bidirectional else 1
    steps = _steps(module, _first(inputs))
    macs = bias = act = elem = 0
    for layer in range(module.num_layers):
        i = module.input_size if layer == 0 else h_out * dirs
        per_step = gates * h * (i + h_out) + (h * p if p else 0)
        macs += dirs * steps * per_step
        if module.bias:
            bias += dirs * steps * 2 * gates * h
        a, e = _POINTWISE[gates]
        act += dirs * steps * a * h
        elem += dirs * steps * e * h
    return OpCount(macs=macs, bias=bias, activation=act, elementwise=elem)


@register_formula(nn.RNNCellBase)
def _cell(module: nn.RNNCellBase, inputs: tuple, output: Any) -> OpCount:
    gates = _GATES[type(module)]
    x = _first(inputs)
    n = x.shape[0] if x.dim() == 2 else 1
    h = module.hidden_size
    a, e = _POINTWISE[gates]
    return OpCount(
        macs=n * gates * h * (module.input_size + h),
        bias=n * 2 * gates * h if module.bias else 0,
        activation=n * a * h,
        elementwise=n * e * h,
    )


@register_formula(nn.MultiheadAttention)
def _attention(module: nn.MultiheadAttention, inputs: tuple, output: Any) -> OpCount:
    q, k = inputs[0], inputs[1]
    e = module.embed_dim
    if q.dim() == 2:  # unbatched (L, E)
        n, lq, lk = 1, q.shape[0], k.shape[0]
    elif module.batch_first:
        n, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    else:
        lq, n, lk = q.shape[0], q.shape[1], k.shape[0]
    proj = lq * e * e + lk * module.kdim * e + lk * module.vdim * e
    products = 2 * lq * lk * e  # Q K^T and A V, summed over heads
    out_proj = lq * e * e
    bias = (lq + 2 * lk) * e * (module.in_proj_bias is not None) + lq * e * (
        module.out_proj.bias is not None
    )
    return OpCount(
        macs=n * (proj + products + out_proj),
        bias=n * bias,
        activation=n * module.num_heads * lq * lk,
        elementwise=n * lq * e,  # the 1/sqrt(d) scaling of the queries
    )
