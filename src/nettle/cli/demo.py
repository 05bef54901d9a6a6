"""`nettle demo`: the main job on the offline digits data; prints where the report is."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train, count and report on the offline digits data",
        description="Train a teacher on the digits data, count its cost and write a report.",
    )
    p.add_argument("-o", "--out", default="runs/demo", help="folder of the demo (runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="teacher epochs (default 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.experiment.demo import run_demo

    console = Console(stderr=True)

    def progress(stage: str, info: dict[str, Any]) -> None:
        if stage in {"teacher", "count", "report"}:
            console.log(f"[bold]{stage}[/bold] {info}")

    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=progress)
    if args.json:
        print(json.dumps({"report": str(result.report), "root": str(result.root)}))
    else:
        Console().print(f"report: [bold]{result.report}[/bold]")
    return 0
