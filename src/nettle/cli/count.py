"""`nettle count MODEL [--input 3x32x32] [--conv SPEC] [--convention NAME] [--depth D] [--json]
[--backward] [--latency [--batch N] [--device DEV]]`.

Builds a zoo model or a foreign one by reference (`torchvision:NAME`, `timm:NAME`,
`package.module:factory`; in_channels from the input shape) and prints its per-module cost
table and totals, per example; `--json` prints the `CostReport` as JSON instead. A foreign
model's convolutions are substituted by surgery; which ones stayed dense, and why, is printed
too (`substitution` in the JSON).

`--backward` adds the multiply-adds of the backward pass, measured (`count(backward=True)`),
and the training step (forward executed + backward). `--latency` times the forward pass
(`measure_latency`) at batch 1 and `--batch N` on `--device`: median and IQR in milliseconds.
Models whose forward needs keyword inputs are counted from Python (`count(forward_kwargs=)`).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from nettle.registry import UnknownNameError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MAX_INPUT_BYTES", "add_parser", "parse_shape", "run"]


MAX_INPUT_BYTES = 2 * 2**30
"""Largest input counted: its float32 values alone (activations come on top)."""


def parse_shape(text: str) -> tuple[int, ...]:
    """`"3x32x32"` -> (3, 32, 32); shapes over `MAX_INPUT_BYTES` of float32 are refused."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input {text!r}: expected sizes joined by x, e.g. 3x32x32") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"--input {text!r}: sizes must be positive")
    size = 4 * math.prod(shape)
    if size > MAX_INPUT_BYTES:
        raise ValueError(
            f"--input {text}: the input alone takes {size / 2**30:,.1f} GiB as float32, more than "
            f"the {MAX_INPUT_BYTES // 2**30} GiB counted here; give a smaller input"
        )
    return shape


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "count",
        help="parameters and multiply-adds of a model (zoo or by reference), per module and in total",
        description="Count parameters and MACs (theoretical and executed) of a model.",
    )
    p.add_argument(
        "model",
        help="zoo name (wrn-28-10, resnet50, simple-cnn), torchvision:NAME, timm:NAME or "
        "package.module:factory",
    )
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
    p.add_argument(
        "--backward", action="store_true", help="also count the backward pass (training cost)"
    )
    p.add_argument(
        "--latency", action="store_true", help="time the forward pass at batch 1 and --batch"
    )
    p.add_argument("--batch", type=int, default=None, help="a second batch size for --latency")
    p.add_argument("--device", default=None, help="device --latency runs on (default: cpu)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.measure import aggregate_modules
    from nettle.measure.latency import measure_latency
    from nettle.measure.report import format_latency
    from nettle.models import create_model
    from nettle.train.distributed import resolve_device

    shape = parse_shape(args.input)
    _check_options(args)
    device = resolve_device(args.device or "cpu", "--device") if args.latency else None
    classes = args.num_classes if args.num_classes is not None else _default_classes(args.model)
    solved = None
    conv = args.conv
    if args.budget is not None or args.budget_macs is not None:
        _check_input(create_model(args.model, num_classes=classes, in_channels=shape[0]), args)
        solved = _solve(args, shape, classes)
        conv = solved.conv
    model = create_model(args.model, num_classes=classes, in_channels=shape[0], conv=conv)
    report = _count(model, shape, args)
    latency = None
    if device is not None:
        latency = measure_latency(
            model.to(device), shape, sorted({1, args.batch or 1}), device=device
        )
    if args.json:
        out = report.to_dict()
        if solved is not None:
            out["budget"] = solved.to_dict()
        if getattr(model, "substitution", None) is not None:
            out["substitution"] = model.substitution.to_dict()
        if latency is not None:
            out["latency"] = [t.to_dict() for t in latency]
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
    if getattr(model, "substitution", None) is not None:
        sub = model.substitution
        kept = ", ".join(f"{n} ({why})" for n, why in sub.dense.items()) or "none"
        console.print(
            f"{sub.conv}: {len(sub.replaced)} convolutions substituted; dense: {kept}",
            highlight=False,
        )
    if report.backward_macs is not None:
        console.print(
            f"backward {report.backward_macs:,} MACs executed (measured); training step "
            f"{report.training_macs:,} MACs (forward executed + backward), per example",
            highlight=False,
        )
    if latency is not None:
        console.print(format_latency(latency), highlight=False)
    for u in report.unsupported:
        console.print(f"[yellow]unsupported:[/yellow] {u}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse counts and budgets that mean nothing, naming the option."""
    if args.num_classes is not None and not 1 <= args.num_classes <= 10**7:
        raise ValueError(f"--num-classes {args.num_classes}: expected 1 to 10,000,000")
    if args.depth is not None and args.depth < 0:
        raise ValueError(f"--depth {args.depth}: expected 0 or more name parts")
    if (args.batch is not None or args.device is not None) and not args.latency:
        raise ValueError("--batch and --device choose how --latency times; give --latency too")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch {args.batch}: expected at least 1")
    for option, value in (("--budget", args.budget), ("--budget-macs", args.budget_macs)):
        if value is not None and not 0 < value < math.inf:
            raise ValueError(f"{option} {value}: expected a finite number above 0, e.g. 1e6")


def _check_input(model: nn.Module, args: argparse.Namespace) -> None:
    """The input must have the rank of the model's first convolution and hold its kernel."""
    from torch import nn

    shape = parse_shape(args.input)
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    conv = next((m for m in model.modules() if isinstance(m, convs)), None)
    if conv is None:
        return
    dims = len(conv.kernel_size)
    if len(shape) != dims + 1:
        want = "x".join(["C", *"DHW"[3 - dims :]])
        raise ValueError(
            f"--input {args.input}: {args.model} takes {want} ({dims + 1} sizes), got {len(shape)}"
        )
    reach = [d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation)]
    if any(s < r for s, r in zip(shape[1:], reach)):
        least = "x".join(map(str, (shape[0], *map(max, shape[1:], reach))))
        raise ValueError(
            f"--input {args.input}: smaller than the {'x'.join(map(str, reach))} kernel of "
            f"{args.model}'s first convolution; give at least {least}"
        )


def _count(model: nn.Module, shape: tuple[int, ...], args: argparse.Namespace) -> Any:
    """`count`, after `_check_input`; an input the plain model cannot run names --input."""
    from nettle.measure import count

    _check_input(model, args)
    try:
        return count(model, shape, convention=args.convention, backward=args.backward)
    except RuntimeError:
        problem = _forward_problem(model, shape)
        if problem is None:
            raise  # the model runs: a fault of the counting, not of the input
        raise ValueError(f"--input {args.input}: {args.model} cannot run it ({problem})") from None


def _forward_problem(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """torch's first line of complaint when `model` runs one input of `shape`, or None."""
    import torch

    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    except RuntimeError as exc:
        return next(iter(str(exc).splitlines()), "") or type(exc).__name__
    return None


def _default_classes(name: str) -> int | None:
    """The classifier size the zoo builder defaults to (1000 for ImageNet nets), else 10; for a
    foreign model None, its builder's own default."""
    import inspect

    from nettle.models import MODELS
    from nettle.models.references import is_reference

    if is_reference(name):
        return None

    try:
        default = inspect.signature(MODELS.get(name)).parameters["num_classes"].default
    except (UnknownNameError, KeyError):
        return 10
    return default if isinstance(default, int) else 10


def _solve(args: argparse.Namespace, shape: tuple[int, ...], classes: int | None):
    from nettle.compress.budget import solve_budget
    from nettle.models import create_model

    if not args.conv:
        raise ValueError("--budget needs --conv NAME (without a setting), e.g. --conv Generic")

    def build(conv: str):
        return create_model(args.model, num_classes=classes, in_channels=shape[0], conv=conv)

    if args.budget is not None:
        return solve_budget(build, args.conv, args.budget)
    return solve_budget(build, args.conv, args.budget_macs, metric="macs", input_shape=shape)
