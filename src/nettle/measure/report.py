"""What `count` returns: `CostReport` with one `ModuleCost` row per costed module, and the
plain-text table of it (`format_cost`), optionally summed to a depth of module names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CostReport", "ModuleCost", "aggregate_modules", "format_cost"]


@dataclass
class ModuleCost:
    """The cost of one module, per example.

    Attributes:
        name: qualified name ("" is the model itself).
        type: class name.
        params: the parameters this row accounts for: the whole subtree for a formula row,
            the module's own (non-child) parameters for a dispatch row.
        macs: theoretical multiply-adds under the report's convention.
        macs_executed: multiply-adds the implementation really executes.
        calls: forward calls during the pass.
        input_shape: shape of the first input of the first call (with batch).
        output_shape: shape of the (first) output of the first call.
        source: "formula" or "dispatch" (counted by the `FlopCounterMode` fallback).
    """

    name: str
    type: str
    params: int
    macs: int
    macs_executed: int
    calls: int = 0
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    source: str = "formula"


@dataclass
class CostReport:
    """What `count` measured, per example. `macs` are theoretical, under `convention`."""

    params: int
    trainable_params: int
    macs: int
    macs_executed: int
    convention: str
    input_shape: list[int]
    modules: list[ModuleCost] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data."""
        return asdict(self)


def aggregate_modules(report: CostReport, depth: int | None = None) -> list[ModuleCost]:
    """The module rows summed over names cut to `depth` parts (None: the rows as they are)."""
    if depth is None:
        return list(report.modules)
    out: dict[str, ModuleCost] = {}
    for r in report.modules:
        key = ".".join(r.name.split(".")[:depth]) if r.name else ""
        agg = out.get(key)
        if agg is None:
            kind = r.type if key == r.name else ""
            agg = out[key] = ModuleCost(key, kind, 0, 0, 0, r.calls, source=r.source)
        agg.params += r.params
        agg.macs += r.macs
        agg.macs_executed += r.macs_executed
    return list(out.values())


def format_cost(report: CostReport, depth: int | None = None) -> str:
    """A plain-text table of the module rows (aggregated to `depth` name parts) and totals."""
    rows = [
        (r.name or "(model)", r.params, r.macs, r.macs_executed)
        for r in aggregate_modules(report, depth)
    ]
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'module':<{width}} {'params':>14} {'MACs':>16} {'MACs executed':>16}"]
    lines += [f"{k:<{width}} {p:>14,} {m:>16,} {e:>16,}" for k, p, m, e in rows]
    lines.append(
        f"{'total':<{width}} {report.params:>14,} {report.macs:>16,} {report.macs_executed:>16,}"
    )
    lines += [f"unsupported: {u}" for u in report.unsupported]
    return "\n".join(lines)
