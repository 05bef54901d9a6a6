"""The two pages of a report: the self-contained HTML page and the Markdown log entry.

`write_report` (`nettle.experiment.report`) draws the plots and the table, then calls
`render_html` and `render_markdown` with a `Page` (title, date, what ran, notes, commands,
unfinished runs) and the extra `Section`s.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Page", "Section", "render_html", "render_markdown"]


@dataclass
class Section:
    """An extra part of a report: a title, paragraphs, a table, images with a caption.

    `table` is (header cells, rows of cells); `images` maps a label to a PNG file (embedded in
    the HTML page, linked relative to the report folder in the Markdown entry).
    """

    title: str
    text: Sequence[str] = ()
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None
    images: Mapping[str, Path] = field(default_factory=dict)
    caption: str = ""


@dataclass
class Page:
    """What a report says besides its table and plots."""

    title: str
    today: str
    about: list[str]
    notes: list[str]
    commands: list[str]
    unfinished: list[list[str]] = field(default_factory=list)


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var keyed = Array.prototype.map.call(body.rows, function (r) {
      var v = r.cells[col].dataset.v;
      return { row: r, v: v, n: v === '' ? NaN : Number(v) };
    });
    keyed.sort(function (a, b) {
      var c = (isNaN(a.n) || isNaN(b.n)) ? (a.v < b.v ? -1 : a.v > b.v ? 1 : 0) : a.n - b.n;
      return asc ? c : -c;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k.row); });
    body.appendChild(frag);
  });
});
"""


def _html_table(heads: Sequence[str], rows: Sequence[Sequence[tuple[str, Any]]], cls: str) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-v="{esc(str(raw if raw is not None else ""))}">{esc(text)}</td>'
            for text, raw in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(label: str, data: str) -> str:
    esc = html.escape
    return (
        f'<figure><img alt="{esc(label)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(label)}</figcaption></figure>"
    )


def _html_section(sec: Section) -> str:
    esc = html.escape
    parts = [f"<h2>{esc(sec.title)}</h2>"] + [f"<p>{esc(t)}</p>" for t in sec.text]
    if sec.table is not None:
        heads, rows = sec.table
        parts.append(_html_table(heads, [[(c, c) for c in row] for row in rows], "plain"))
    for label, path in sec.images.items():
        parts.append(_figure(label, base64.b64encode(Path(path).read_bytes()).decode()))
    if sec.caption:
        parts.append(f'<p class="caption">{esc(sec.caption)}</p>')
    return "\n".join(parts)


def render_html(page: Page, heads, rows, encoded, sections: Sequence[Section]) -> str:
    """The HTML page: table `heads`/`rows` (text, sort value), plots as base64 `encoded` PNGs."""
    esc = html.escape
    about = "".join(f"<li>{esc(a)}</li>" for a in page.about)
    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in page.notes)
    table = f'<div class="scroll">{_html_table(heads, rows, "sortable")}</div>'
    left_out = ""
    if page.unfinished:
        cells = [[(c, c) for c in row] for row in page.unfinished]
        left_out = "<h2>Runs not in the plots</h2>" + _html_table(
            ["run", "status", "reason"], cells, "plain"
        )
    imgs = "".join(_figure(n, b) for n, b in encoded.items())
    extra = "".join(_html_section(sec) for sec in sections)
    cmd = esc("\n".join(page.commands))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(page.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f3f3f3; }} table.sortable th {{ cursor: pointer; position: sticky; top: 0; }}
.scroll {{ max-height: 36em; overflow: auto; display: inline-block; max-width: 100%; }}
table.sortable td {{ text-align: right; }} table.plain td {{ text-align: left; }}
table.sortable td:first-child {{ text-align: left; white-space: nowrap; }}
th[data-dir="asc"]::after {{ content: " \\25B2"; }} th[data-dir="desc"]::after {{ content: " \\25BC"; }}
figure {{ display: inline-block; margin: 1em; vertical-align: top; }}
img {{ max-width: 680px; }} figcaption, .caption {{ color: #555; font-size: 0.9em; }}
.note {{ color: #333; border-left: 3px solid #c9a227; padding-left: 0.6em; }}
</style></head><body>
<h1>{esc(page.title)}</h1><p>{page.today}</p><ul>{about}</ul>{note_html}
<h2>Results</h2>{table}{left_out}
<h2>Plots</h2>{imgs}
{extra}
<h2>Reproduce</h2><pre>{cmd}</pre>
<script>{_SORT_JS}</script>
</body></html>
"""


def _md_table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] + [
        "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows
    ]


def render_markdown(page: Page, out: Path, heads, rows, plots, sections: Sequence[Section]) -> str:
    """The Markdown entry; images are linked relative to the report folder `out`."""
    lines = [f"## {page.today}: {page.title}", ""]
    lines += [f"- {a}" for a in page.about] + ([""] if page.about else [])
    lines += [f"> {n}" for n in page.notes] + ([""] if page.notes else [])
    lines += _md_table(heads, [[text for text, _ in row] for row in rows])
    if page.unfinished:
        lines += ["", "Runs not in the plots:", ""]
        lines += _md_table(["run", "status", "reason"], page.unfinished)
    lines.append("")
    lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    for sec in sections:
        lines += ["", f"### {sec.title}", ""] + [f"{t}\n" for t in sec.text]
        if sec.table is not None:
            lines += [*_md_table(*sec.table), ""]
        lines += [f"![{label}]({os.path.relpath(p, out)})" for label, p in sec.images.items()]
        if sec.caption:
            lines += ["", f"*{sec.caption}*"]
    if page.commands:
        lines += ["", "Reproduce:", "", "```", *page.commands, "```"]
    return "\n".join(lines) + "\n"
