"""What `count` returns: `CostReport` with one `ModuleCost` row per costed module, and the
plain-text table of it (`format_cost`), optionally summed to a depth of module names; what
`measure_latency` returns: `Latency` per batch size, and its lines (`format_latency`).

In a notebook a `CostReport` shows as one line (`repr`) or a small table of its totals
(`_repr_html_`); `to_dataframe()` gives the module rows to pandas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = [
    "CostReport",
    "Latency",
    "ModuleCost",
    "aggregate_modules",
    "format_cost",
    "format_latency",
]


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
    """What `count` measured, per example. `macs` are theoretical, under `convention`.

    Attributes:
        backward_macs: multiply-adds the backward pass executes (None: not measured); a
            training step costs `macs_executed + backward_macs` (`training_macs`).
        model: class name of the counted model, a label for display (not in `to_dict`).
    """

    params: int
    trainable_params: int
    macs: int
    macs_executed: int
    convention: str
    input_shape: list[int]
    modules: list[ModuleCost] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    backward_macs: int | None = None
    model: str | None = None

    @property
    def training_macs(self) -> int | None:
        """Executed multiply-adds of a forward and a backward pass (None: no backward)."""
        return None if self.backward_macs is None else self.macs_executed + self.backward_macs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (`backward_macs` only when measured)."""
        out = asdict(self)
        del out["model"]
        if self.backward_macs is None:
            del out["backward_macs"]
        return out

    def to_dataframe(self) -> pandas.DataFrame:
        """The module rows as a pandas `DataFrame`, one column per `ModuleCost` field."""
        try:
            import pandas
        except ImportError:
            raise ImportError("CostReport.to_dataframe needs pandas: pip install pandas") from None
        columns = [f.name for f in fields(ModuleCost)]
        return pandas.DataFrame([asdict(r) for r in self.modules], columns=columns)

    def _totals(self) -> list[tuple[str, str]]:
        back = (
            []
            if self.backward_macs is None
            else [
                ("backward MACs", f"{self.backward_macs:,}"),
                ("training MACs", f"{self.training_macs:,}"),
            ]
        )
        return [
            ("model", self.model or "?"),
            ("input", "x".join(map(str, self.input_shape))),
            ("convention", self.convention),
            ("params", f"{self.params:,}"),
            ("trainable params", f"{self.trainable_params:,}"),
            ("MACs", f"{self.macs:,}"),
            ("MACs executed", f"{self.macs_executed:,}"),
            *back,
            ("modules", str(len(self.modules))),
            ("unsupported", str(len(self.unsupported))),
        ]

    def __repr__(self) -> str:
        parts = [] if self.model is None else [f"model={self.model!r}"]
        parts += [f"params={self.params:,}", f"macs={self.macs:,}"]
        if self.macs_executed != self.macs:
            parts.append(f"macs_executed={self.macs_executed:,}")
        if self.backward_macs is not None:
            parts.append(f"backward_macs={self.backward_macs:,}")
        if self.convention != "default":
            parts.append(f"convention={self.convention!r}")
        parts += [f"modules={len(self.modules)}", f"unsupported={len(self.unsupported)}"]
        return f"CostReport({', '.join(parts)})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in self._totals()
        )
        rows += "".join(f'<tr><td colspan="2">{escape(u)}</td></tr>' for u in self.unsupported[:5])
        return f"<table><caption>cost per example</caption>{rows}</table>"


@dataclass
class Latency:
    """Time of one forward pass of a batch, in seconds: median and interquartile range.

    Attributes:
        batch_size: examples per forward pass.
        device: where it ran, named (`cuda:0 (NVIDIA H100 ...)`, `cpu (2 threads)`).
        median_s: median seconds per forward pass over the timed blocks.
        iqr_s: interquartile range of those blocks, in seconds.
        runs: timed blocks (each the mean of several calls).
    """

    batch_size: int
    device: str
    median_s: float
    iqr_s: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data."""
        return asdict(self)


def format_latency(latencies: list[Latency]) -> str:
    """One line per batch size: median and IQR in milliseconds, and examples per second."""
    return "\n".join(
        f"batch {t.batch_size} on {t.device}: median {t.median_s * 1e3:,.3f} ms, "
        f"IQR {t.iqr_s * 1e3:,.3f} ms, {t.batch_size / t.median_s:,.0f} examples/s "
        f"({t.runs} runs)"
        for t in latencies
    )


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
