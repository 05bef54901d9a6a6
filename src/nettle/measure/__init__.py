"""Measure: time (`Stopwatch`, `PhaseTimer`), cost (`count`), memory (`MemoryMeter`)."""

from nettle.measure.conventions import get_convention, list_conventions
from nettle.measure.cost import CostReport, ModuleCost, aggregate_modules, count, format_cost
from nettle.measure.formulas import OpCount, get_formula, register_formula, registered_types
from nettle.measure.latency import measure_latency
from nettle.measure.memory import MemoryMeter, measure_peak_memory
from nettle.measure.report import Latency, format_latency
from nettle.measure.timing import PhaseTimer, Stopwatch, format_phases

__all__ = [
    "CostReport",
    "Latency",
    "MemoryMeter",
    "ModuleCost",
    "OpCount",
    "PhaseTimer",
    "Stopwatch",
    "aggregate_modules",
    "count",
    "format_cost",
    "format_latency",
    "format_phases",
    "get_convention",
    "get_formula",
    "list_conventions",
    "measure_latency",
    "measure_peak_memory",
    "register_formula",
    "registered_types",
]
