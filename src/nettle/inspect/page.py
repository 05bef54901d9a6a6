"""The index pages of an inspection: HTML with the PNGs embedded, Markdown linking them."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nettle.files import OutputFolder
from nettle.inspect.activations import LayerStats

__all__ = ["PAGES", "write_pages"]

_CAPTIONS = {
    "filters": "First-layer filters, each scaled to its own range.",
    "history": "Training history from metrics.jsonl.",
    "attributions": "Attributions of the first test examples for their predicted class: "
    "Grad-CAM over the input, saliency (|gradient|) and integrated gradients (from a blank "
    "input; red for the class, blue against).",
    "weights": "Weights (histogram) and biases (per output unit) of each conv and linear layer.",
    "interpolation_grid": "The model over the plane x + alpha (y - x) + beta (z - x) through "
    "three test examples: predicted class, its probability, and the probed channel.",
}
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "img{max-width:100%}table{border-collapse:collapse;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}dt{font-weight:bold}"
)


def _caption(key: str) -> str:
    if key in _CAPTIONS:
        return _CAPTIONS[key]
    kind, _, c = key.rpartition("_c")
    if kind == "top_patches":
        return f"Channel {c}: the inputs with the highest activation and the patch behind each."
    if kind == "featurevis":
        return f"Channel {c}: image optimised to maximise the channel's mean activation."
    if key.startswith("feature_history_"):
        layer = key.removeprefix("feature_history_")
        return f"Feature maps of {layer} for fixed test inputs at each recorded epoch."
    return key


def _stats_rows(stats: Sequence[LayerStats]) -> tuple[list[str], list[list[str]]]:
    heads = ["layer", "shape", "mean", "std", "zero %", "min", "p50", "p99", "max"]
    rows = [
        [
            s.name,
            "x".join(map(str, s.shape)),
            f"{s.mean:.3g}",
            f"{s.std:.3g}",
            f"{100 * s.zero_fraction:.1f}",
            f"{s.min:.3g}",
            f"{s.percentiles.get(50, float('nan')):.3g}",
            f"{s.percentiles.get(99, float('nan')):.3g}",
            f"{s.max:.3g}",
        ]
        for s in stats
    ]
    return heads, rows


PAGES = ("index.html", "index.md")
"""The names `write_pages` writes; claim them in the `OutputFolder` first."""


def write_pages(
    out: OutputFolder,
    info: Mapping[str, Any],
    images: Mapping[str, Path],
    stats: Sequence[LayerStats],
) -> tuple[Path, Path]:
    """Write `index.html` and `index.md` into `out` (which has claimed `PAGES`); their paths."""
    esc = html.escape
    facts = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in info.items() if v is not None
    )
    figures = []
    for key, path in images.items():
        data = base64.b64encode(path.read_bytes()).decode()
        figures.append(
            f'<figure id="{esc(key)}"><img alt="{esc(key)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(_caption(key))} ({esc(path.name)})</figcaption></figure>"
        )
    heads, rows = _stats_rows(stats)
    table = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Inspection of "
        f"{esc(str(info.get('run', '')))}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Inspection</h1><dl>{facts}</dl>{''.join(figures)}"
        "<h2>Activation statistics</h2><p>Per layer over the split (percentiles from a "
        f"sample; zero % counts exact zeros).</p><table>{table}</table></body></html>\n"
    )
    md = ["# Inspection", ""]
    md += [f"- **{k}**: {v}" for k, v in info.items() if v is not None]
    for key, path in images.items():
        md += ["", f"## {key}", "", _caption(key), "", f"![{key}]({path.name})"]
    md += ["", "## Activation statistics", "", "| " + " | ".join(heads) + " |"]
    md += ["|" + "---|" * len(heads)] + ["| " + " | ".join(r) + " |" for r in rows]
    return out.write("index.html", page), out.write("index.md", "\n".join(md) + "\n")
