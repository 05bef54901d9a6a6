"""Receptive-field rules: how each layer maps an output position back to input indices.

Per spatial dimension an activation depends on a set of indices. A convolution or pool with
kernel k, stride s, padding p and dilation d maps output index o to the inputs
`o*s - p + j*d` (j < k) inside the feature map (Araujo et al. 2019, "Computing receptive fields
of convolutional neural networks", on sets instead of intervals); pointwise modules keep the
sets. `nettle.inspect.trace` walks a model's graph with these rules; add rules for your own
layers with `register_receptive_field` or `register_pointwise`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = [
    "Rect",
    "Sets",
    "UntraceableError",
    "is_pool_function",
    "pointwise_function",
    "pointwise_method",
    "pool_function_back",
    "register_pointwise",
    "register_receptive_field",
    "rule_for",
    "window_back",
]

Sets = list[set[int]]  # per spatial dimension, the indices an activation depends on
Rule = Callable[[nn.Module, Sets, Sequence[int]], Sets]


class UntraceableError(ValueError):
    """A layer or operation whose receptive field the tracer cannot compute."""


@dataclass(frozen=True)
class Rect:
    """An input rectangle, half-open like slices: rows `top:bottom`, columns `left:right`."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The patch of `image` (..., H, W) inside the rectangle."""
        return image[..., self.top : self.bottom, self.left : self.right]


_RULES: dict[type, Rule] = {}


def register_receptive_field(*types: type) -> Callable[[Rule], Rule]:
    """Register `fn(module, out_sets, in_shape) -> in_sets` for modules of these types."""

    def deco(fn: Rule) -> Rule:
        for t in types:
            _RULES[t] = fn
        return fn

    return deco


def register_pointwise(*types: type) -> None:
    """Declare modules that act on each spatial position separately (sets pass through)."""
    register_receptive_field(*types)(lambda m, sets, shape: sets)


def rule_for(module: nn.Module) -> Rule | None:
    """The rule registered for the module's type or its nearest base class, or None."""
    for t in type(module).__mro__:
        if t in _RULES:
            return _RULES[t]
    return None


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def window_back(
    sets: Sets, in_shape: Sequence[int], kernel: Any, stride: Any, padding: Any, dilation: Any = 1
) -> Sets:
    """Input indices of a sliding window: output o reads `o*s - p + j*d`, j < k, in range."""
    sizes = list(in_shape[2:])
    n = len(sizes)
    k, s, p, d = (_ntuple(v, n) for v in (kernel, stride, padding, dilation))
    return [
        {i for o in S for j in range(kj) if 0 <= (i := o * sj - pj + j * dj) < size}
        for S, size, kj, sj, pj, dj in zip(sets, sizes, k, s, p, d)
    ]


@register_receptive_field(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(m: nn.Module, sets: Sets, in_shape: Sequence[int]) -> Sets:
    if m.padding_mode != "zeros":
        raise UntraceableError(f"padding_mode {m.padding_mode!r} wraps or mirrors the input")
    pad = m.padding
    if isinstance(pad, str):  # 'valid' or 'same' (PyTorch puts the odd extra pad at the end)
        pad = [0 if pad == "valid" else d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation)]
    return window_back(sets, in_shape, m.kernel_size, m.stride, pad, m.dilation)


@register_receptive_field(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(m: nn.Module, sets: Sets, in_shape: Sequence[int]) -> Sets:
    return window_back(sets, in_shape, m.kernel_size, m.stride, m.padding, m.dilation)


@register_receptive_field(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(m: nn.Module, sets: Sets, in_shape: Sequence[int]) -> Sets:
    return window_back(sets, in_shape, m.kernel_size, m.stride, m.padding)


@register_receptive_field(nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d)
def _pad(m: nn.Module, sets: Sets, in_shape: Sequence[int]) -> Sets:
    before = list(m.padding[0::2])[::-1]  # padding lists the last dimension first
    return window_back(sets, in_shape, 1, 1, before[-len(sets) :])


register_pointwise(
    *(getattr(nn, n) for n in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Identity")),
    *(getattr(nn, n) for n in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout")),
    *(getattr(nn, n) for n in ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU")),
    *(getattr(nn, n) for n in ("GELU", "SiLU", "Mish", "Sigmoid", "Tanh", "Hardtanh")),
    *(getattr(nn, n) for n in ("Hardswish", "Hardsigmoid", "Softplus", "Softsign", "LogSigmoid")),
)

_POINTWISE_FUNCTIONS = {
    *(getattr(operator, n) for n in ("add", "sub", "mul", "truediv", "neg", "pow", "iadd")),
    *(getattr(torch, n) for n in ("add", "sub", "mul", "div", "neg", "abs", "exp", "sqrt")),
    *(getattr(torch, n) for n in ("relu", "sigmoid", "tanh", "clamp", "maximum", "minimum")),
    *(getattr(F, n) for n in ("relu", "relu6", "leaky_relu", "gelu", "silu", "elu", "selu")),
    *(getattr(F, n) for n in ("hardtanh", "hardswish", "hardsigmoid", "sigmoid", "tanh")),
    *(getattr(F, n) for n in ("softplus", "mish", "dropout", "dropout2d", "alpha_dropout")),
}
_POINTWISE_METHODS = {
    *("relu", "relu_", "sigmoid", "tanh", "add", "add_", "sub", "mul", "mul_", "div", "neg"),
    *("abs", "exp", "sqrt", "pow", "clamp", "clamp_", "contiguous", "clone", "float", "to"),
    *("double", "half", "type_as", "detach"),
}
_POOL_FUNCTIONS = {
    F.max_pool1d: True, F.max_pool2d: True, F.max_pool3d: True,
    F.avg_pool1d: False, F.avg_pool2d: False, F.avg_pool3d: False,
}  # fmt: skip


def pool_function_back(node: fx.Node, sets: Sets, in_shape: Sequence[int]) -> Sets:
    """The input sets of a functional pool call (`F.max_pool2d(x, 3, 2, 1)` in a graph)."""
    names = ["input", "kernel_size", "stride", "padding"]
    names += ["dilation"] if _POOL_FUNCTIONS[node.target] else []
    a = {**dict(zip(names, node.args)), **node.kwargs}
    stride = a.get("stride") or a["kernel_size"]
    return window_back(
        sets, in_shape, a["kernel_size"], stride, a.get("padding", 0), a.get("dilation", 1)
    )


def pointwise_function(target: Any) -> bool:
    """Whether a function called in a graph acts on each position separately."""
    return target in _POINTWISE_FUNCTIONS


def pointwise_method(name: Any) -> bool:
    """Whether a tensor method called in a graph acts on each position separately."""
    return name in _POINTWISE_METHODS


def is_pool_function(target: Any) -> bool:
    """Whether a function called in a graph is a functional max or average pool."""
    return target in _POOL_FUNCTIONS


def _register_nettle_modules() -> None:
    from nettle.nn import logic, normalize

    register_pointwise(normalize.Normalize, normalize.RepeatChannels, logic.ReLog, logic.ReLog1p)
    register_pointwise(logic.Maxout, logic.MinMaxOut)  # over channels, per position


_register_nettle_modules()
