"""`nettle runs [--sweep S] [--status S] [--where EXPR ...] [--store PATH] [--json]`."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="query the run store", description=__doc__)
    p.add_argument("--sweep", default=None)
    p.add_argument("--status", default=None)
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="filter, e.g. --where test_acc>0.9 --where name=seed=0 (repeatable)",
    )
    p.add_argument("--store", default="runs/nettle.db")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nettle.experiment.store import Store

    if not Path(args.store).is_file():
        raise FileNotFoundError(f"{args.store}: no run store")
    rows = Store(args.store).query(args.sweep, args.status, args.where)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    keys = sorted({k for r in rows for k in r["metrics"]})
    table = Table(title=f"{len(rows)} runs in {args.store}")
    for col in ("id", "sweep", "name", "status", "attempts", *keys):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            r["sweep"] or "",
            r["name"] or "",
            r["status"],
            str(r["attempts"]),
            *[f"{r['metrics'][k]:.4g}" if k in r["metrics"] else "" for k in keys],
        )
    Console().print(table)
    return 0
