"""Measure: time (`Stopwatch`, `PhaseTimer`), cost (`count`), memory (`MemoryMeter`)."""

from nettle.measure.conventions import get_convention, list_conventions
from nettle.measure.cost import CostReport, ModuleCost, aggregate_modules, count, format_cost
from nettle.measure.formulas import OpCount, get_formula, register_formula, registered_types
from nettle.measure.memory import MemoryMeter, measure_peak_memory
from nettle.measure.timing import PhaseTimer, Stopwatch, format_phases

__all__ = [
    "CostReport",
    "MemoryMeter",
    "ModuleCost",
    "OpCount",
    "PhaseTimer",
    "Stopwatch",
    "aggregate_modules",
    "count",
    "format_cost",
    "format_phases",
    "get_convention",
    "get_formula",
    "list_conventions",
    "measure_peak_memory",
    "register_formula",
    "registered_types",
]
