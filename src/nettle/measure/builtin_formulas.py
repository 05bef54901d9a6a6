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
    rows = _numel(output) // module.out_features if module.out_features else 0
    return OpCount(
        macs=rows * module.in_features * module.out_features,
        bias=rows * module.out_features if module.bias is not None else 0,
    )


@register_formula(nn.Bilinear)
def _bilinear(module: nn.Bilinear, inputs: tuple, output: torch.Tensor) -> OpCount:
    rows = _numel(output) // module.out_features if module.out_features else 0
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
    nn.RMSNorm,
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
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReflectionPad3d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
    nn.ReplicationPad3d,
    nn.CircularPad1d,
    nn.CircularPad2d,
    nn.CircularPad3d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
    nn.Embedding,
):
    register_formula(_t)(_free)


# --- recurrent layers -------------------------------------------------------------------------

_RNN_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}
_CELL_GATES = ((nn.LSTMCell, 4), (nn.GRUCell, 3), (nn.RNNCell, 1))
# per hidden unit and step, after the gate mat-vecs: (activations, other elementwise ops)
# RNN: tanh/relu; GRU: 2 sigmoids + tanh, r*(.), (1-z), (1-z)*n, z*h (the sum is fused);
# LSTM: 3 sigmoids + 2 tanh, f*c, i*g, their sum, o*tanh(c)
_POINTWISE = {1: (1, 0), 3: (3, 4), 4: (5, 4)}


def _steps(x: Any) -> int:
    """Number of (time step, sequence) pairs processed: T*N, or the real steps of a pack."""
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes.sum())
    if x.dim() == 2:  # unbatched (T, I)
        return x.shape[0]
    return x.shape[0] * x.shape[1]  # (T, N, I) or (N, T, I): the same product


@register_formula(nn.RNNBase)
def _rnn(module: nn.RNNBase, inputs: tuple, output: Any) -> OpCount:
    """Gate mat-vecs per step, layer and direction: gates * H * (I + H), I = H*dirs above."""
    gates = _RNN_GATES[module.mode]
    h = module.hidden_size
    p = getattr(module, "proj_size", 0) or 0
    h_out = p or h
    dirs = 2 if module.bidirectional else 1
    runs = dirs * _steps(_first(inputs))  # (direction, step, sequence) triples per layer
    a, e = _POINTWISE[gates]
    macs = 0
    for layer in range(module.num_layers):
        i = module.input_size if layer == 0 else h_out * dirs
        macs += runs * (gates * h * (i + h_out) + h * p)  # + the LSTM projection
    layers = module.num_layers
    return OpCount(
        macs=macs,
        bias=layers * runs * 2 * gates * h if module.bias else 0,
        activation=layers * runs * a * h,
        elementwise=layers * runs * e * h,
    )


@register_formula(nn.RNNCellBase)
def _cell(module: nn.RNNCellBase, inputs: tuple, output: Any) -> OpCount:
    """One step: gates * H * (I + H) per example."""
    gates = next(g for t, g in _CELL_GATES if isinstance(module, t))
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
    """Q/K/V in-projections, Q K^T and A V (Lq * Lk * E each), out-projection."""
    q, k = inputs[0], inputs[1]
    e = module.embed_dim
    if q.dim() == 2:  # unbatched (L, E)
        n, lq, lk = 1, q.shape[0], k.shape[0]
    elif module.batch_first:
        n, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    else:
        lq, n, lk = q.shape[0], q.shape[1], k.shape[0]
    proj = lq * e * e + lk * module.kdim * e + lk * module.vdim * e
    # the learned bias key/value and the zero key/value are attended to as extra positions
    keys = lk + (module.bias_k is not None) + bool(module.add_zero_attn)
    products = 2 * lq * keys * e  # summed over heads
    out_proj = lq * e * e
    bias = (lq + 2 * lk) * e * (module.in_proj_bias is not None) + lq * e * (
        module.out_proj.bias is not None
    )
    return OpCount(
        macs=n * (proj + products + out_proj),
        bias=n * bias,
        activation=n * module.num_heads * lq * keys,  # softmax
        elementwise=n * lq * e,  # the 1/sqrt(d) scaling of the queries
    )
