"""Measure: time (`Stopwatch`, `PhaseTimer`), cost (`count`), memory (`MemoryMeter`)."""

from nettle.measure.conventions import list_conventions
from nettle.measure.cost import CostReport, ModuleCost, count, format_cost
from nettle.measure.formulas import OpCount, register_formula
from nettle.measure.timing import PhaseTimer, Stopwatch, format_phases

__all__ = [
    "CostReport",
    "ModuleCost",
    "OpCount",
    "PhaseTimer",
    "Stopwatch",
    "count",
    "format_cost",
    "format_phases",
    "list_conventions",
    "register_formula",
]
