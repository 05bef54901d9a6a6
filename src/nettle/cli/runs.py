"""`nettle runs [--sweep S] [--status S] [--where EXPR ...] [--metrics K,..] [--store PATH] [--json]`.

Filters: `--where test_acc>0.9` (a metric), `--where train.optim.lr=0.1` (a config key),
`--where status=failed` (a column); repeat to combine (AND).
"""

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
        help="filter, e.g. --where test_acc>0.9 --where train.seed=0 (repeatable)",
    )
    p.add_argument(
        "--metrics",
        default="best_test_acc,test_acc,params",
        help="metric columns of the table (best_test_acc,test_acc,params); 'all' for every one",
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
    have = sorted({k for r in rows for k in r["metrics"]})
    keys = have if args.metrics == "all" else [k for k in args.metrics.split(",") if k in have]
    table = Table(title=f"{len(rows)} runs in {args.store}")
    for col in ("id", "sweep", "name", "status", "attempts", *keys):
        table.add_column(col, no_wrap=col in ("id", "status"))
    failed = any(r["reason"] for r in rows)
    if failed:
        table.add_column("reason", overflow="fold")
    for r in rows:
        table.add_row(
            r["id"],
            r["sweep"] or "",
            r["name"] or "",
            r["status"],
            str(r["attempts"]),
            *[f"{r['metrics'][k]:.4g}" if k in r["metrics"] else "" for k in keys],
            *([r["reason"] or ""] if failed else []),
        )
    Console().print(table)
    return 0
