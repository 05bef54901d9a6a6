"""`nettle report [SWEEP] [--where EXPR] [--store PATH] [--root DIR] [--references FILE] -o DIR`.

Builds the HTML page and the Markdown research-log entry of the runs in the store: a sortable
table, error vs parameters and vs multiply-adds with labelled points and the Pareto front,
robustness and learning curves; unfinished runs listed with their reason; the commands that
reproduce it (with a sweep file per sweep, written next to the report). `--references` draws
published results (a YAML list or a CSV file of name, params, macs, error in %) as black stars
on the error plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="HTML page and Markdown log entry of the runs in the store",
        description=__doc__,
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("sweep", nargs="?", default=None, help="only the runs of this sweep")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="filter, e.g. --where test_acc>0.9 --where train.seed=0 (repeatable)",
    )
    p.add_argument("--root", default="runs", help="folder of the runs (runs)")
    p.add_argument("--store", default=None, help="run store (default ROOT/nettle.db)")
    p.add_argument("-o", "--out", required=True, help="folder of the report")
    p.add_argument("--title", default=None, help="title of the page")
    p.add_argument(
        "--references",
        default=None,
        metavar="FILE",
        help="published results to draw: YAML or CSV of name, params, macs, error (%%)",
    )
    p.add_argument("--json", action="store_true", help="print where the files are as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.experiment.report import load_reference_points
    from nettle.experiment.store_report import report_from_store

    store = Path(args.store or Path(args.root) / "nettle.db")
    refs = load_reference_points(args.references) if args.references else []
    files = report_from_store(
        store, args.out, args.sweep, args.where, title=args.title, references=refs
    )
    if args.json:
        info = {
            "html": str(files.html),
            "markdown": str(files.markdown),
            "plots": {k: str(v) for k, v in files.plots.items()},
            "runs": [r["name"] for r in files.records],
        }
        print(json.dumps(info))
        return 0
    Console().print(
        f"{len(files.records)} runs reported: [bold]{files.html}[/bold] and {files.markdown}",
        highlight=False,
        soft_wrap=True,
    )
    return 0
