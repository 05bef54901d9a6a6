"""`nettle sweep plan FILE [--store PATH] [--json]`: the runs a sweep file expands to."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="sweep files: plan the runs", description=__doc__)
    verbs = p.add_subparsers(dest="sweep_verb", metavar="ACTION", required=True)
    plan = verbs.add_parser("plan", help="list the runs of a sweep file and their status")
    plan.add_argument("file", help="sweep YAML file")
    plan.add_argument("--store", default="runs/nettle.db", help="run store (runs/nettle.db)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nettle.experiment.spec import plan_sweep
    from nettle.experiment.store import Store

    sweep = plan_sweep(args.file)
    status = {}
    if Path(args.store).is_file():
        status = {r["id"]: r["status"] for r in Store(args.store).query(sweep=sweep.name)}
    rows = [
        {"id": r.id, "name": r.name, "overrides": r.overrides, "status": status.get(r.id, "new")}
        for r in sweep.runs
    ]
    if args.json:
        print(json.dumps({"sweep": sweep.name, "runs": rows}))
        return 0
    table = Table(title=f"sweep {sweep.name}: {len(rows)} runs")
    for col in ("id", "run", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["name"], r["status"])
    Console().print(table)
    return 0
