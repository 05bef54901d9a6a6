"""Activation statistics of a network's units, and of two networks side by side.

The question of the logic-unit research ("newlogic", Le 2019-2020): does a ReLog/maxout net
fire differently from a ReLU net? Per unit layer (the outputs of ReLU, ReLog, ReLog1p,
Maxout, MinMaxOut and the other activation modules, in `named_modules` order): the fraction of
weak activations (nonzero but under `weak` times the layer's largest magnitude), the fraction
exactly zero, the mean and the largest activation over a data set
(`nettle.inspect.activations.activation_stats`). `compare_units` pairs the layers of two
networks by position (the i-th unit layer of each), so a ReLU net and its logic variant line up
even where names differ (a fold replaced a module).

`nettle inspect RUN --activations [--against OTHER_RUN]` prints them.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from nettle.inspect.activations import activation_stats
from nettle.nn.logic import Maxout, MinMaxOut, ReLog, ReLog1p

__all__ = ["UNIT_TYPES", "UnitStats", "compare_units", "unit_layers", "unit_stats"]

UNIT_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    ReLog,
    ReLog1p,
    Maxout,
    MinMaxOut,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
)
"""The modules whose outputs count as a unit layer."""


@dataclass
class UnitStats:
    """One unit layer's activations over a data set."""

    layer: str
    unit: str
    weak_fraction: float
    zero_fraction: float
    mean: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for `--json`)."""
        return asdict(self)


def unit_layers(model: nn.Module) -> list[str]:
    """Names of the unit layers of `model` (see `UNIT_TYPES`), in `named_modules` order."""
    return [n for n, m in model.named_modules() if isinstance(m, UNIT_TYPES)]


def unit_stats(
    model: nn.Module, data: Any, weak: float = 0.1, batch_size: int = 256
) -> list[UnitStats]:
    """Weak and zero fractions, mean and max of every unit layer of `model` over `data`.

    Raises:
        ValueError: `weak` outside (0, 1], or a model without unit layers.
    """
    if not 0 < weak <= 1:
        raise ValueError(f"weak must be in (0, 1], got {weak}")
    layers = unit_layers(model)
    if not layers:
        raise ValueError("the model has no unit layers (ReLU, ReLog, Maxout, ...)")
    modules = dict(model.named_modules())
    stats = activation_stats(
        model, data, layers, batch_size, percentiles=(50,), sample_size=200_000, weak=weak
    )
    return [
        UnitStats(
            s.name, type(modules[s.name]).__name__, s.weak_fraction, s.zero_fraction, s.mean, s.max
        )
        for s in stats
    ]


def compare_units(
    a: list[UnitStats], b: list[UnitStats]
) -> list[tuple[UnitStats | None, UnitStats | None]]:
    """The unit layers of two networks paired by position; the longer one's rest with None."""
    return list(itertools.zip_longest(a, b))
