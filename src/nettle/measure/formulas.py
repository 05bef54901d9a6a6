"""Per-module cost formulas: a registry keyed by module type, extended by users.

A formula receives the module, the positional inputs of its forward call and its output, and
returns an `OpCount` that splits the cost into categories. A counting convention (see
`nettle.measure.conventions`) then decides which categories make up the reported MACs, so
one formula serves every convention.

Example:
    >>> import torch.nn as nn
    >>> class Scale(nn.Module):
    ...     def forward(self, x):
    ...         return 2 * x
    >>> @register_formula(Scale)
    ... def _scale_cost(module, inputs, output):
    ...     return OpCount(elementwise=output.numel())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

__all__ = [
    "Formula",
    "OpCount",
    "get_formula",
    "register_formula",
    "registered_types",
]


@dataclass
class OpCount:
    """The cost of one module call, split by category (all counts are per whole batch).

    Attributes:
        macs: multiply-adds of multiply-add ops (conv, linear, matmul, recurrent gates,
            attention products); one fused multiply-add is one MAC. Bias adds excluded.
        executed_macs: the multiply-adds the implementation really performs, when it differs
            from the theoretical `macs` (a hashed layer that rebuilds a dense kernel executes
            dense MACs); `None` means equal to `macs`.
        bias: bias additions of conv/linear-like layers.
        relu: one op per element entering a ReLU.
        activation: other pointwise non-linearities (sigmoid, tanh, GELU, ...).
        pool: kernel-window ops of pooling (output elements x window size).
        norm: normalisation ops (batch/layer/group norm, per element).
        upsample: interpolation ops.
        elementwise: other elementwise arithmetic (adds, scalings, gate products).
        reference_macs: where a published counting script counts a layer differently from its
            true multiply-adds (the deficient-efficient count of ACDC, see its docstring), that
            script's figure; conventions reproducing the script use it. `None`: same as `macs`.
    """

    macs: int = 0
    executed_macs: int | None = None
    bias: int = 0
    relu: int = 0
    activation: int = 0
    pool: int = 0
    norm: int = 0
    upsample: int = 0
    elementwise: int = 0
    reference_macs: int | None = None

    @property
    def executed(self) -> int:
        """Executed multiply-adds (`executed_macs`, or `macs` when not set)."""
        return self.macs if self.executed_macs is None else self.executed_macs

    def __add__(self, other: OpCount) -> OpCount:
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "executed_macs":
                out[f.name] = None if a is None and b is None else self.executed + other.executed
            elif f.name == "reference_macs":
                ra = self.macs if a is None else a
                rb = other.macs if b is None else b
                out[f.name] = None if a is None and b is None else ra + rb
            else:
                out[f.name] = a + b
        return OpCount(**out)

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form, for JSON."""
        return asdict(self)


Formula = Callable[[nn.Module, tuple[Any, ...], Any], OpCount]

_FORMULAS: dict[type[nn.Module], Formula] = {}


def register_formula(module_type: type[nn.Module]) -> Callable[[Formula], Formula]:
    """Decorator: register the cost formula of `module_type` (and its subclasses).

    Registering a type twice raises `ValueError`; the most specific registered class in
    the module's MRO wins.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_formula expects an nn.Module subclass, got {module_type!r}")

    def decorator(fn: Formula) -> Formula:
        if module_type in _FORMULAS:
            raise ValueError(f"a cost formula for {module_type.__name__} is already registered")
        _FORMULAS[module_type] = fn
        return fn

    return decorator


def get_formula(module: nn.Module) -> Formula | None:
    """The formula for `module`'s class (nearest registered base class), or `None`."""
    for cls in type(module).__mro__:
        if cls in _FORMULAS:
            return _FORMULAS[cls]
        if cls is nn.Module:
            break
    return None


def registered_types() -> list[type[nn.Module]]:
    """Module types that have a formula."""
    return list(_FORMULAS)


def _numel(t: Any) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0
