"""Reports of finished runs: a results table, cost/error trade-off plots with the Pareto front,
robustness curves and learning curves, as a static HTML page and a Markdown research-log entry.

Input is plain data, one record per run (a dict): `name`, and any of `params`, `macs`,
`test_acc` (0..1), `robustness` (`{attack: {eps: accuracy}}`), `history` (epoch records with
`epoch`, `train_loss`, `test_acc`, ...), `conv`, `config` and `run_dir`. Runs that did not
finish are listed apart (`unfinished`: `name`, `status`, `reason`) and never plotted. Extra
`Section`s add paragraphs, a table and images (e.g. an inspection of a model) to both pages.
The HTML page is self-contained (plots and images embedded as PNG data, a few lines of script
to sort the table), so it opens offline from any folder. `report_from_store`
(`nettle.experiment.store_report`) builds the records from the run store.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nettle.experiment.report_page import (
    Page,
    Section,
    atomic_write,
    render_html,
    render_markdown,
)

__all__ = [
    "ReportFiles",
    "Section",
    "pareto_front",
    "plot_learning_curves",
    "plot_robustness",
    "plot_tradeoff",
    "write_report",
]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost and error (lower is better),
    sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def _error(rec: dict[str, Any]) -> float | None:
    acc = rec.get("test_acc")
    return None if acc is None else 100.0 * (1.0 - float(acc))


def plot_tradeoff(records: Sequence[dict[str, Any]], cost: str = "params") -> Figure:
    """Test error (%) against `cost` ("params" or "macs"), labelled points, the Pareto front."""
    rows = [r for r in records if r.get(cost) and _error(r) is not None]
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    xs = [float(r[cost]) for r in rows]
    ys = [_error(r) for r in rows]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    front = pareto_front(list(zip(xs, ys)))
    if len(front) > 1:
        ax.step(
            [xs[i] for i in front],
            [ys[i] for i in front],
            where="post",
            color="tab:red",
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="upper right")
    if xs and max(xs) / max(min(xs), 1) > 20:
        ax.set_xscale("log")
    unit = "parameters" if cost == "params" else "multiply-adds per example"
    ax.set_xlabel(unit)
    ax.set_ylabel("test error (%)")
    ax.set_title(f"Error vs {unit}")
    ax.grid(True, alpha=0.3)
    texts = [ax.text(x, y, str(r["name"]), fontsize=8) for x, y, r in zip(xs, ys, rows)]
    if len(texts) > 1:
        from adjustText import adjust_text

        fig.canvas.draw()  # text extents need a renderer
        adjust_text(texts, ax=ax, x=xs, y=ys, arrowprops={"arrowstyle": "-", "color": "0.5"})
    return fig


def plot_robustness(records: Sequence[dict[str, Any]]) -> Figure:
    """Robust accuracy against epsilon, one line per (model, attack)."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for rec in records:
        for attack, curve in (rec.get("robustness") or {}).items():
            eps = sorted(float(e) for e in curve)
            acc = [100.0 * float(curve[_key(curve, e)]) for e in eps]
            ax.plot(eps, acc, marker="o", label=f"{rec['name']} / {attack}")
    ax.set_xlabel("epsilon")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Accuracy under attack")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    return fig


def _key(curve: dict[Any, Any], eps: float) -> Any:
    for k in curve:
        if float(k) == eps:
            return k
    raise KeyError(eps)


def plot_learning_curves(records: Sequence[dict[str, Any]]) -> Figure:
    """Training loss and test accuracy per epoch for every run with a history."""
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for rec in records:
        hist = [h for h in rec.get("history") or [] if "epoch" in h]
        if not hist:
            continue
        epochs = [h["epoch"] for h in hist]
        if all("train_loss" in h for h in hist):
            loss_ax.plot(epochs, [h["train_loss"] for h in hist], label=rec["name"])
        if all("test_acc" in h for h in hist):
            acc_ax.plot(epochs, [100 * h["test_acc"] for h in hist], label=rec["name"])
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


@dataclass
class ReportFiles:
    """Where `write_report` put its files."""

    html: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


_COLUMNS = [
    ("name", "run"),
    ("conv", "substitute"),
    ("params", "params"),
    ("macs", "MACs"),
    ("test_acc", "test acc (%)"),
]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "test_acc":
        return f"{100 * float(value):.2f}"
    if key in ("params", "macs"):
        return f"{int(value):,}"
    return str(value)


def _table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    attacks = sorted(
        {(a, float(e)) for r in records for a, c in (r.get("robustness") or {}).items() for e in c}
    )
    heads = [h for _, h in _COLUMNS] + [f"{a} eps={e:g} (%)" for a, e in attacks]
    rows = []
    for r in records:
        row = [(_cell(k, r.get(k)), r.get(k)) for k, _ in _COLUMNS]
        for a, e in attacks:
            curve = (r.get("robustness") or {}).get(a) or {}
            v = next((curve[k] for k in curve if float(k) == e), None)
            row.append(("" if v is None else f"{100 * float(v):.2f}", v))
        rows.append(row)
    return heads, rows


def _png(fig: Figure, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


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
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "error_vs_params": plot_tradeoff(records, "params"),
        "error_vs_macs": plot_tradeoff(records, "macs"),
    }
    if any(r.get("robustness") for r in records):
        figures["robustness"] = plot_robustness(records)
    if any(r.get("history") for r in records):
        figures["learning_curves"] = plot_learning_curves(records)
    plots, encoded = {}, {}
    for name, fig in figures.items():
        plots[name] = out / f"{name}.png"
        encoded[name] = _png(fig, plots[name])
    heads, rows = _table_rows(records)
    page = Page(title, _dt.date.today().isoformat(), list(about), list(notes), list(commands))
    page.unfinished = [
        [str(r.get("name", "")), str(r.get("status", "")), str(r.get("reason") or "")]
        for r in unfinished
    ]
    files = ReportFiles(out / "report.html", out / "report.md", plots, list(records))
    atomic_write(files.html, render_html(page, heads, rows, encoded, sections))
    atomic_write(files.markdown, render_markdown(page, out, heads, rows, plots, sections))
    return files
