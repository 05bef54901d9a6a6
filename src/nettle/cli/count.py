"""`nettle count MODEL [--input 3x32x32] [--conv SPEC] [--convention NAME] [--depth D] [--json]`.

Builds a zoo model (in_channels from the input shape) and prints its per-module cost table and
totals, per example; `--json` prints the `CostReport` as JSON instead.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from nettle.registry import UnknownNameError

__all__ = ["add_parser", "parse_shape", "run"]


def parse_shape(text: str) -> tuple[int, ...]:
    """`"3x32x32"` -> (3, 32, 32)."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input {text!r}: expected sizes joined by x, e.g. 3x32x32") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"--input {text!r}: sizes must be positive")
    return shape


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "count",
        help="parameters and multiply-adds of a zoo model, per module and in total",
        description="Count parameters and MACs (theoretical and executed) of a zoo model.",
    )
    p.add_argument("model", help="zoo name, e.g. wrn-28-10, resnet50, simple-cnn")
    p.add_argument("--input", default="3x32x32", help="input shape without batch (3x32x32)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs (default: the model's, 1000 for ImageNet nets, else 10)",
    )
    p.add_argument("--conv", default=None, help="substitute for the convolutions, e.g. Sep, ACDC")
    p.add_argument(
        "--convention",
        default="default",
        help="counting convention (default, deficient-efficient, macs+elementwise)",
    )
    p.add_argument("--depth", type=int, default=None, help="aggregate the table to this name depth")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget",
        type=float,
        default=None,
        help="find the --conv setting whose network has this many parameters",
    )
    budget.add_argument(
        "--budget-macs",
        type=float,
        default=None,
        help="find the --conv setting whose network has this many MACs",
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.measure import aggregate_modules, count
    from nettle.models import create_model

    shape = parse_shape(args.input)
    classes = args.num_classes if args.num_classes is not None else _default_classes(args.model)
    solved = None
    conv = args.conv
    if args.budget is not None or args.budget_macs is not None:
        solved = _solve(args, shape, classes)
        conv = solved.conv
    model = create_model(args.model, num_classes=classes, in_channels=shape[0], conv=conv)
    report = count(model, shape, convention=args.convention)
    if args.json:
        out = report.to_dict()
        if solved is not None:
            out["budget"] = solved.to_dict()
        print(json.dumps(out))
        return 0
    table = Table(
        title=f"{args.model} on {args.input} ({report.convention} convention, per example)"
    )
    for col in ("module", "type", "params", "MACs", "MACs executed"):
        table.add_column(col, justify="left" if col in ("module", "type") else "right")
    for r in aggregate_modules(report, args.depth):
        table.add_row(
            r.name or "(model)", r.type, f"{r.params:,}", f"{r.macs:,}", f"{r.macs_executed:,}"
        )
    table.add_section()
    table.add_row(
        "total", "", f"{report.params:,}", f"{report.macs:,}", f"{report.macs_executed:,}"
    )
    console = Console()
    console.print(table)
    if solved is not None:
        verdict = "meets" if solved.reachable else "cannot reach"
        console.print(
            f"budget {solved.target:,.0f} {solved.metric}: {verdict} it with [bold]{solved.conv}[/bold] "
            f"-> {solved.achieved:,} ({solved.relative_error:+.2%}), {solved.evaluations} networks built"
        )
    for u in report.unsupported:
        console.print(f"[yellow]unsupported:[/yellow] {u}")
    return 0


def _default_classes(name: str) -> int:
    """The classifier size the zoo builder defaults to (1000 for ImageNet nets), else 10."""
    import inspect

    from nettle.models import MODELS

    try:
        default = inspect.signature(MODELS.get(name)).parameters["num_classes"].default
    except (UnknownNameError, KeyError):
        return 10
    return default if isinstance(default, int) else 10


def _solve(args: argparse.Namespace, shape: tuple[int, ...], classes: int):
    from nettle.compress.budget import solve_budget
    from nettle.models import create_model

    if not args.conv:
        raise ValueError("--budget needs --conv NAME (without a setting), e.g. --conv Generic")

    def build(conv: str):
        return create_model(args.model, num_classes=classes, in_channels=shape[0], conv=conv)

    if args.budget is not None:
        return solve_budget(build, args.conv, args.budget)
    return solve_budget(build, args.conv, args.budget_macs, metric="macs", input_shape=shape)
