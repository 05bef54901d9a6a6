"""`nettle demo`: the main job on the offline digits data; prints where the report is."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a teacher and budgeted students on the offline digits data, then report",
        description="Train a teacher, distil two substituted students at a parameter budget, "
        "count and attack every model (as sweep jobs recorded in ROOT/nettle.db), inspect the "
        "teacher and write an HTML and Markdown report. Rerunning skips the finished runs.",
    )
    p.add_argument("-o", "--out", default="runs/demo", help="folder of the demo (runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every run (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slots", type=int, default=2, help="CPU slots of the students' sweep (2)")
    p.add_argument(
        "--attack-examples", type=int, default=None, help="attack only the first N test digits"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse counts and seeds the demo's runs cannot use, naming the option, before any work."""
    for option, value in (
        ("--epochs", args.epochs),
        ("--slots", args.slots),
        ("--attack-examples", args.attack_examples),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{option} {value}: expected a whole number of at least 1")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed {args.seed}: expected a seed from 0 to 2**32 - 1")


def _since_start() -> float | None:
    """Wall seconds since this process started (Linux's /proc), None where unknown."""
    try:
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start / os.sysconf("SC_CLK_TCK"))


def run(args: argparse.Namespace) -> int:
    from nettle.experiment.demo import run_demo

    _check_options(args)
    started = time.perf_counter() - (_since_start() or 0.0)  # the process start, if known
    console = Console(stderr=True)

    def progress(stage: str, info: dict[str, Any]) -> None:
        if stage in {"teacher", "students", "inspect", "report"}:
            console.log(f"[bold]{stage}[/bold] " + ", ".join(f"{k} {v}" for k, v in info.items()))
        elif stage == "done":
            console.log(f"  {info['name']} done in {info['seconds']:.1f} s")
        elif stage in {"start", "skip", "failed"}:
            extra = f": {info['reason']}" if stage == "failed" else ""
            console.log(f"  {info['name']} {stage}{extra}")

    result = run_demo(
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        attack_examples=args.attack_examples,
        slots=args.slots,
        progress=progress,
    )
    wall = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {
                    "report": str(result.report),
                    "html": str(result.html),
                    "root": str(result.root),
                    "runs": result.records,
                    "seconds": result.seconds,
                    "wall_seconds": wall,
                },
                default=str,
            )
        )
    else:
        out = Console()
        for r in result.records:
            out.print(
                f"{r['name']:<18} {r['conv']:<22} params {int(r['params']):>7,}  MACs "
                f"{int(r['macs']):>10,}  test acc {100 * (r['test_acc'] or 0):.1f}%"
            )
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        out.print(f"time: {stages}")
        out.print(f"wall time: {wall:.1f} s (the whole command, start-up included)")
        out.print(f"report: [bold]{result.html}[/bold] and {result.report}")
    return 0
