"""The plots of a report: error against cost with the Pareto front, robustness and learning
curves, drawn so that they stay readable from one run to a sweep of a thousand.

Runs are coloured by substitute family (`substitute_family`: the `conv` spec without its
setting) and marked by training mode (`training_mode`: plain, distilled, adversarial, bayes).
The trade-off plots draw every run; beyond `MANY_RUNS` runs they name only the Pareto front
and the runs a record marks with `label: true`, at most `LABEL_CAP` names. Runs of a search
marked `infeasible` (they break a constraint) are grey crosses, never on the front; those marked
`front` (the search's Pareto front) are ringed in red. Published results
(`ReferencePoint`) are named black stars. Beyond `MANY_RUNS` runs, the robustness and learning
curves show, per training mode, one median line per family with its min-max band.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

__all__ = [
    "LABEL_CAP",
    "MANY_RUNS",
    "MODES",
    "ReferencePoint",
    "family_colors",
    "pareto_front",
    "plot_learning_curves",
    "plot_robustness",
    "plot_tradeoff",
    "substitute_family",
    "training_mode",
]

LABEL_CAP = 25
"""Most run names written on a trade-off plot."""
MANY_RUNS = 12
"""Above this many runs, robustness and learning curves are summarised per family."""
MODES = {"plain": "o", "distilled": "^", "adversarial": "s", "bayes": "D"}
"""Training modes and their markers."""


@dataclass(frozen=True)
class ReferencePoint:
    """A published result to hold a sweep against: `error` is the test error in percent."""

    name: str
    params: float
    error: float
    macs: float | None = None


def substitute_family(conv: str | None) -> str:
    """The substitute without its setting: "Generic_0.1" -> "Generic", None -> "Conv"."""
    if not conv or not conv.strip():
        return "Conv"
    name, sep, setting = conv.strip().rpartition("_")
    if sep and name:
        try:
            float(setting)
            return name
        except ValueError:
            pass
    return conv.strip()


def training_mode(config: Mapping[str, Any]) -> str:
    """The mode of a run config: "distilled", "adversarial" or "bayes" when that section is
    set (the first of them in this order), else "plain"."""
    for key, mode in (("distill", "distilled"), ("adversarial", "adversarial"), ("bayes", "bayes")):
        if config.get(key) is not None:
            return mode
    return "plain"


def _family(rec: Mapping[str, Any]) -> str:
    return str(rec.get("family") or substitute_family(rec.get("conv")))


def _mode(rec: Mapping[str, Any]) -> str:
    return str(rec.get("mode") or training_mode(rec.get("config") or {}))


def family_colors(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One colour per family of `records`, in name order (tab10, tab20 beyond ten)."""
    families = sorted({_family(r) for r in records})
    cmap = colormaps["tab10" if len(families) <= 10 else "tab20"]
    return {f: cmap(i % cmap.N) for i, f in enumerate(families)}


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


def _error(rec: Mapping[str, Any]) -> float | None:
    acc = rec.get("test_acc")
    return None if acc is None else 100.0 * (1.0 - float(acc))


def _labelled(rows: Sequence[Mapping[str, Any]], front: list[int], cap: int) -> list[int]:
    """Every run of a small sweep (up to `MANY_RUNS`); else the front (evenly thinned to
    `cap`), then runs marked `label: true`, at most `cap`."""
    if len(rows) <= min(MANY_RUNS, cap):
        return list(range(len(rows)))
    if len(front) > cap:
        front = [front[round(k * (len(front) - 1) / (cap - 1))] for k in range(cap)]
    on_front = set(front)
    named = [i for i, r in enumerate(rows) if r.get("label") and i not in on_front]
    return (front + named)[:cap]


def _modes(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The training modes of `records`, in `MODES` order, others after them by name."""
    present = {_mode(r) for r in records}
    return [m for m in MODES if m in present] + sorted(present - set(MODES))


def _legends(fig: Figure, rows: Sequence[Mapping[str, Any]], colors, extra: list[Any]) -> None:
    """A legend of the families (colours), one of the modes (markers) and the `extra` lines."""
    shown = {_family(r) for r in rows}
    fam = [
        Line2D([], [], ls="", marker="o", color=c, label=f) for f, c in colors.items() if f in shown
    ]
    kinds = [
        Line2D([], [], ls="", marker=MODES.get(m, "o"), color="0.35", label=m) for m in _modes(rows)
    ]
    if fam:
        fig.legend(handles=fam, loc="outside right upper", title="substitute", fontsize=7)
    if kinds or extra:
        fig.legend(handles=kinds + extra, loc="outside right lower", title="run", fontsize=7)


def _scatter_runs(ax: Axes, rows, xs: np.ndarray, ys: np.ndarray, colors) -> None:
    """Every run, one collection per (family, mode), labelled "family, mode"."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[_family(r), _mode(r)].append(i)
    size = 36 if len(rows) <= 60 else 14
    for (family, mode), idx in sorted(groups.items()):
        ax.scatter(
            xs[idx], ys[idx], s=size, color=colors[family], marker=MODES.get(mode, "o"),
            alpha=0.85, linewidths=0, zorder=3, gid="runs", label=f"{family}, {mode}",
        )  # fmt: skip


def plot_tradeoff(
    records: Sequence[Mapping[str, Any]],
    cost: str = "params",
    references: Sequence[ReferencePoint] = (),
) -> Figure:
    """Test error (%) against `cost` ("params" or "macs"): every run, the Pareto front, the
    reference points, and names: of every run of a small sweep, else of the front and of the
    runs marked `label: true` (see the module docstring)."""
    colors = family_colors(records)
    rows = [r for r in records if r.get(cost) and _error(r) is not None]
    xs = np.array([float(r[cost]) for r in rows])
    ys = np.array([_error(r) for r in rows], dtype=float)
    fig = Figure(figsize=(7.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ok = [i for i, r in enumerate(rows) if not r.get("infeasible")]  # a search's constraints
    _scatter_runs(ax, [rows[i] for i in ok], xs[ok], ys[ok], colors)
    front = [ok[k] for k in pareto_front(list(zip(xs[ok].tolist(), ys[ok].tolist())))]
    extra = _search_marks(ax, rows, xs, ys)
    if len(front) > 1:
        ax.step(xs[front], ys[front], where="post", color="tab:red", label="Pareto front", zorder=2)
        extra.append(Line2D([], [], color="tab:red", label="Pareto front"))
    refs = [p for p in references if getattr(p, cost) is not None]
    rx, ry = [float(getattr(p, cost)) for p in refs], [float(p.error) for p in refs]
    if refs:
        star = {"marker": "*", "color": "black", "label": "published"}
        ax.scatter(rx, ry, s=140, zorder=4, gid="references", **star)
        extra.append(Line2D([], [], ls="", ms=10, **star))
    _legends(fig, rows, colors, extra)
    allx = [*xs.tolist(), *rx]
    if allx and max(allx) / max(min(allx), 1) > 20:
        ax.set_xscale("log")
    unit = "parameters" if cost == "params" else "multiply-adds per example"
    ax.set(xlabel=unit, ylabel="test error (%)", title=f"Error vs {unit}")
    ax.grid(True, alpha=0.3)
    box = {"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.7, "linewidth": 0}
    texts = [
        ax.text(xs[i], ys[i], str(rows[i]["name"]), fontsize=7, bbox=box)
        for i in _labelled(rows, front, LABEL_CAP)
    ]
    texts += [
        ax.text(x, y, p.name, fontsize=7, weight="bold", bbox=box) for x, y, p in zip(rx, ry, refs)
    ]
    if len(texts) > 1:
        _spread(fig, ax, texts)
    return fig


def _search_marks(ax: Axes, rows, xs: np.ndarray, ys: np.ndarray) -> list[Any]:
    """Grey crosses for runs a search's constraints rule out, red rings for its Pareto front
    (records marked `infeasible` / `front`); their legend entries."""
    marks = {
        "infeasible": {"marker": "x", "color": "0.45", "label": "infeasible (constraint)"},
        "front": {"marker": "o", "facecolors": "none", "edgecolors": "tab:red",
                  "label": "search's Pareto front"},
    }  # fmt: skip
    legend = []
    for key, style in marks.items():
        idx = [i for i, r in enumerate(rows) if r.get(key)]
        if idx:
            ax.scatter(xs[idx], ys[idx], s=90 if key == "front" else 36, zorder=4, gid=key, **style)
            face = {"markerfacecolor": "none"} if key == "front" else {}
            color, label = style.get("color", style.get("edgecolors")), style["label"]
            legend.append(
                Line2D([], [], ls="", marker=style["marker"], color=color, label=label, **face)
            )
    return legend


_SPREAD = {  # converges on sweeps of 30 to 1,000 runs (bench/report_scale.py)
    "iter_lim": 300,
    "expand": (1.1, 1.3),
    "force_text": (0.2, 0.4),
    "force_static": (0.2, 0.4),
}


def _spread(fig: Figure, ax: Axes, texts: list[Text]) -> None:
    """Move the names apart (adjustText, names only), in the final layout, then freeze it."""
    from adjustText import adjust_text

    FigureCanvasAgg(fig).draw()  # lays out the legends, so the axes has its final size
    fig.set_layout_engine("none")  # saving must not move the axes under the placed names
    tx = [t.get_position()[0] for t in texts]
    ty = [t.get_position()[1] for t in texts]
    arrows = {"arrowstyle": "-", "color": "0.5", "lw": 0.6}
    adjust_text(texts, x=tx, y=ty, ax=ax, arrowprops=arrows, **_SPREAD)


def _key_eps(curve: Mapping[Any, float]) -> list[tuple[float, float]]:
    return sorted((float(e), float(a)) for e, a in curve.items())


def _by_family(points: Iterable[tuple[str, float, float]]) -> dict[str, dict[float, list]]:
    """`{family: {x: [y of each run]}}` of (family, x, y) points."""
    series: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for family, x, y in points:
        series[family][x].append(float(y))
    return series


def _bands(ax: Axes, series, colors: Mapping[str, Any], scale: float = 1.0) -> None:
    """Per family: the median of its runs at each x, and the min-max band."""
    for family, points in sorted(series.items()):
        xs = sorted(points)
        vals = [np.asarray(points[x], dtype=float) * scale for x in xs]
        lo, mid, hi = ([float(f(v)) for v in vals] for f in (np.min, np.median, np.max))
        ax.fill_between(xs, lo, hi, color=colors[family], alpha=0.15, linewidth=0)
        ax.plot(xs, mid, color=colors[family], marker=".", label=family)


def _legend(fig: Figure, axes: Sequence[Axes], title: str | None) -> None:
    """One legend right of the figure for the labelled lines of all `axes`."""
    found: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    if found:
        handles, labels = list(found.values()), list(found)
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, title=title)


def _robustness_lines(fig: Figure, runs: Sequence[Mapping[str, Any]]) -> list[Axes]:
    ax = fig.add_subplot()
    for rec in runs:
        for attack, curve in rec["robustness"].items():
            eps, acc = zip(*_key_eps(curve)) if curve else ((), ())
            ax.plot(eps, [100 * a for a in acc], marker="o", label=f"{rec['name']} / {attack}")
    if ax.lines:
        fig.legend(loc="outside right upper", fontsize=7, ncols=1 if len(ax.lines) <= 16 else 2)
    ax.set_title("Accuracy under attack")
    return [ax]


def _robustness_bands(fig: Figure, runs: Sequence[Mapping[str, Any]]) -> list[Axes]:
    attacks = sorted({a for r in runs for a in r["robustness"]})
    modes = _modes(runs)
    grid = fig.subplots(len(modes), len(attacks), sharex=True, sharey=True, squeeze=False)
    colors = family_colors(runs)
    for row, mode in zip(grid, modes):
        chosen = [r for r in runs if _mode(r) == mode]
        for ax, attack in zip(row, attacks):
            curves = [(r, _key_eps(r["robustness"].get(attack) or {})) for r in chosen]
            series = _by_family((_family(r), e, a) for r, curve in curves for e, a in curve)
            _bands(ax, series, colors, 100.0)
            ax.set_title(f"{attack}, {mode} ({len(chosen)} runs)", fontsize=9)
    axes = list(grid.ravel())
    _legend(fig, axes, "median, min-max")
    fig.suptitle(f"Accuracy under attack: {len(runs)} runs by substitute family")
    return axes


def plot_robustness(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Robust accuracy against epsilon: one line per (run, attack) for up to `MANY_RUNS` runs,
    else a panel per attack and training mode with the median and min-max band of each
    family."""
    runs = [r for r in records if r.get("robustness")]
    if len(runs) <= MANY_RUNS:
        fig = Figure(figsize=(7.6, 4.4), layout="constrained")
        axes = _robustness_lines(fig, runs)
    else:
        attacks = len({a for r in runs for a in r["robustness"]})
        modes = len({_mode(r) for r in runs})
        fig = Figure(figsize=(3.4 * attacks + 1.6, 2.6 * modes + 0.6), layout="constrained")
        axes = _robustness_bands(fig, runs)
    for ax in axes:
        ax.set(xlabel="epsilon", ylabel="robust accuracy (%)", ylim=(-2, 102))
        ax.grid(True, alpha=0.3)
        ax.label_outer()
    return fig


def plot_learning_curves(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss and test accuracy per epoch: one line per run for up to `MANY_RUNS` runs,
    else per training mode the median and min-max band of each family."""
    runs = [(r, [h for h in r.get("history") or [] if "epoch" in h]) for r in records]
    runs = [(r, h) for r, h in runs if h]
    few = len(runs) <= MANY_RUNS
    modes = [None] if few else _modes([r for r, _ in runs])
    fig = Figure(figsize=(9.6, 0.6 + 3.0 * len(modes)), layout="constrained")
    grid = fig.subplots(len(modes), 2, sharex=True, squeeze=False)
    colors = family_colors([r for r, _ in runs])
    for (loss_ax, acc_ax), mode in zip(grid, modes):
        metrics = ((loss_ax, "train_loss", 1.0), (acc_ax, "test_acc", 100.0))
        chosen = [(r, h) for r, h in runs if mode is None or _mode(r) == mode]
        for ax, key, scale in metrics:
            if few:
                for rec, hist in chosen:
                    if all(key in h for h in hist):
                        values = [scale * h[key] for h in hist]
                        ax.plot([h["epoch"] for h in hist], values, label=rec["name"])
            else:
                values = ((_family(r), h["epoch"], h[key]) for r, hist in chosen for h in hist)
                _bands(ax, _by_family(v for v in values if v[2] is not None), colors, scale)
        where = "" if mode is None else f", {mode} ({len(chosen)} runs)"
        loss_ax.set(ylabel="training loss", title="Training loss" + where)
        acc_ax.set(ylabel="test accuracy (%)", title="Test accuracy" + where)
    for ax in grid.ravel():
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in grid[-1]:
        ax.set_xlabel("epoch")
    _legend(fig, list(grid.ravel()), None if few else "median, min-max")
    return fig
