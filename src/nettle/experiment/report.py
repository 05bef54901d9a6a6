"""Reports of finished runs: a results table, cost/error trade-off plots with the Pareto front,
robustness curves and learning curves, as a static HTML page and a Markdown research-log entry.

Input is plain data, one record per run (a dict): `name`, and any of `params`, `macs`,
`test_acc` and `test_top5` (0..1), `robustness` (`{attack: {eps: accuracy}}`), `history`
(epoch records with `epoch`, `train_loss`, `test_acc`, ...), `conv`, `family`, `mode`,
`config`, `run_dir`, and `label: true` to write the run's name on the trade-off plots even off
the Pareto front. Runs that did not finish are listed apart (`unfinished`: `name`, `status`,
`reason`) and never plotted. Published results (`ReferencePoint`, e.g. read by
`load_reference_points`) are drawn on the trade-off plots. Extra `Section`s add paragraphs, a
table and images (e.g. an inspection of a model) to both pages. The HTML page is
self-contained (plots and images embedded as PNG data, a few lines of script to sort the
table), so it opens offline from any folder. `report_from_store`
(`nettle.experiment.store_report`) builds the records from the run store. The plots are in
`nettle.experiment.report_plots`.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as _dt
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nettle.experiment.report_page import Page, Section, render_html, render_markdown
from nettle.experiment.report_plots import (
    ReferencePoint,
    pareto_front,
    plot_learning_curves,
    plot_robustness,
    plot_tradeoff,
    substitute_family,
    training_mode,
)
from nettle.files import OutputFolder, claim_outputs
from nettle.safe_yaml import load_yaml_file

__all__ = [
    "ReferencePoint",
    "ReportFiles",
    "Section",
    "load_reference_points",
    "pareto_front",
    "plot_learning_curves",
    "plot_robustness",
    "plot_tradeoff",
    "substitute_family",
    "training_mode",
    "write_report",
]

_REFERENCE_FIELDS = "name, params, macs (optional), error (test error in %)"


def _reference_number(value: Any, where: str, what: str, low: float, high: float) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{where}: expected {what}, got {value!r}; accepted: {_REFERENCE_FIELDS}")
    return float(value)


def _reference_point(entry: Any, where: str) -> ReferencePoint:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping with {_REFERENCE_FIELDS}, got {entry!r}")
    if None in entry:  # a CSV row with more cells than the header
        raise ValueError(f"{where}: more cells than the header has columns ({_REFERENCE_FIELDS})")
    unknown = sorted(set(entry) - {"name", "params", "macs", "error"})
    if unknown:
        raise ValueError(f"{where}, field {unknown[0]!r}: unknown; accepted: {_REFERENCE_FIELDS}")
    name = entry.get("name")
    if isinstance(name, bool) or not isinstance(name, (str, int, float)) or not str(name).strip():
        raise ValueError(
            f"{where}, field 'name': expected a non-empty text, got {name!r}; "
            f"accepted: {_REFERENCE_FIELDS}"
        )

    def number(key: str, what: str, low: float, high: float) -> float:
        return _reference_number(entry.get(key), f"{where}, field {key!r}", what, low, high)

    macs = entry.get("macs")
    missing = macs is None or (isinstance(macs, str) and not macs.strip())
    return ReferencePoint(
        name=str(name).strip(),
        params=number("params", "a count >= 1", 1, math.inf),
        error=number("error", "a percentage in [0, 100]", 0, 100),
        macs=None if missing else number("macs", "a count >= 1 or nothing", 1, math.inf),
    )


def load_reference_points(path: str | Path) -> list[ReferencePoint]:
    """Published results to draw on the trade-off plots, from a YAML or CSV file.

    YAML: a list of mappings; CSV: a header row. Keys or columns: `name`, `params`, `macs`
    (may be missing or empty), `error` (test error in percent).

    Example:
        >>> load_reference_points("papers.csv")  # doctest: +SKIP
        [ReferencePoint(name='WRN-28-10', params=36500000.0, error=3.9, macs=5.2e9)]

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: a file that does not parse or a bad point; one line naming the file, the
            row (counted from 1, the CSV header not counted) and the field.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        entries = load_yaml_file(path)  # safe and bounded; errors name the file and line
    elif suffix == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text; expected a CSV file") from None
        entries = list(csv.DictReader(io.StringIO(text)))
    else:
        raise ValueError(f"{path}: reference points are read from .yaml, .yml or .csv files")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of points with {_REFERENCE_FIELDS}")
    return [_reference_point(e, f"{path}: row {i}") for i, e in enumerate(entries, 1)]


@dataclass
class ReportFiles:
    """Where `write_report` put its files."""

    html: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"ReportFiles(html={str(self.html)!r}, markdown={str(self.markdown)!r}, "
            f"plots={len(self.plots)}, records={len(self.records)})"
        )

    def _repr_html_(self) -> str:
        rows = [("html", str(self.html)), ("markdown", str(self.markdown))]
        rows += [(f"plot {name}", str(path)) for name, path in self.plots.items()]
        rows.append(("records", str(len(self.records))))
        cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        return f"<table>{cells}</table>"


def _columns(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The table's (key, heading): training mode and top-5 only when some run has them."""
    mixed = any((r.get("mode") or training_mode(r.get("config") or {})) != "plain" for r in records)
    top5 = any(r.get("test_top5") is not None for r in records)
    return (
        [("name", "run"), ("conv", "substitute")]
        + [("mode", "training")] * mixed
        + [("params", "params"), ("macs", "MACs"), ("test_acc", "test acc (%)")]
        + [("test_top5", "top-5 acc (%)")] * top5
    )


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in ("test_acc", "test_top5"):
        return f"{100 * float(value):.2f}"
    if key in ("params", "macs"):
        return f"{int(value):,}"
    return str(value)


def _table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    columns = _columns(records)
    attacks = sorted(
        {(a, float(e)) for r in records for a, c in (r.get("robustness") or {}).items() for e in c}
    )
    heads = [h for _, h in columns] + [f"{a} eps={e:g} (%)" for a, e in attacks]
    rows = []
    for r in records:
        values = dict(r)
        if "mode" in dict(columns):
            values["mode"] = r.get("mode") or training_mode(r.get("config") or {})
        row = [(_cell(k, values.get(k)), values.get(k)) for k, _ in columns]
        curves = {
            (a, float(e)): v for a, c in (r.get("robustness") or {}).items() for e, v in c.items()
        }
        for key in attacks:
            v = curves.get(key)
            row.append(("" if v is None else f"{100 * float(v):.2f}", v))
        rows.append(row)
    return heads, rows


PLOTS = ("error_vs_params", "error_vs_macs", "robustness", "learning_curves")
REPORT_FILES = ("report.html", "report.md", *(f"{n}.png" for n in PLOTS))
"""Every file `write_report` may write into its folder."""


def _png(fig: Figure, out: OutputFolder, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    out.write(name, buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def _reference_note(references: Sequence[ReferencePoint]) -> str:
    points = [
        f"{p.name} ({p.params:,.0f} params"
        + ("" if p.macs is None else f", {p.macs:,.0f} MACs")
        + f", {p.error:g}% error)"
        for p in references
    ]
    return "Published results (black stars): " + "; ".join(points) + "."


def write_report(
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    title: str = "nettle report",
    commands: Sequence[str] = (),
    notes: Sequence[str] = (),
    *,
    about: Sequence[str] = (),
    unfinished: Sequence[dict[str, Any]] = (),
    sections: Sequence[Section] = (),
    references: Sequence[ReferencePoint] = (),
) -> ReportFiles:
    """Write `report.html`, `report.md` and the plots (PNG) into `out_dir`.

    Args:
        records: one per finished run (see the module docstring).
        out_dir: created if missing.
        title: of the page and of the research-log entry.
        commands: shell lines that reproduce the results.
        notes: remarks printed under the date (warnings, how to read the numbers).
        about: what ran (sweeps, runs, statuses, code version), one line each.
        unfinished: runs left out of the table and plots, listed with their status and reason.
        sections: extra sections after the plots.
        references: published results drawn as black stars on the trade-off plots.

    Raises:
        ValueError: a file of the report's names exists in `out_dir` and nettle did not write
            it (checked for every name before anything is written), or the folder cannot be
            written.
    """
    folder = Path(out_dir)
    OutputFolder(folder).check(REPORT_FILES)
    figures = {
        "error_vs_params": plot_tradeoff(records, "params", references),
        "error_vs_macs": plot_tradeoff(records, "macs", references),
    }
    if any(r.get("robustness") for r in records):
        figures["robustness"] = plot_robustness(records)
    if any(r.get("history") for r in records):
        figures["learning_curves"] = plot_learning_curves(records)
    out = claim_outputs(folder, ["report.html", "report.md", *(f"{n}.png" for n in figures)])
    plots, encoded = {}, {}
    for name, fig in figures.items():
        plots[name] = folder / f"{name}.png"
        encoded[name] = _png(fig, out, f"{name}.png")
    heads, rows = _table_rows(records)
    notes = list(notes) + [_reference_note(references)] * bool(references)
    page = Page(title, _dt.date.today().isoformat(), list(about), notes, list(commands))
    page.unfinished = [
        [str(r.get("name", "")), str(r.get("status", "")), str(r.get("reason") or "")]
        for r in unfinished
    ]
    files = ReportFiles(folder / "report.html", folder / "report.md", plots, list(records))
    out.write("report.html", render_html(page, heads, rows, encoded, sections))
    out.write("report.md", render_markdown(page, folder, heads, rows, plots, sections))
    return files
