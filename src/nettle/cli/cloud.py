"""`nettle cloud prices`: the cheapest recent AWS spot price per instance type, and per GPU.

    nettle cloud prices --instance-types p3.2xlarge,g5.xlarge [--regions us-east-1,eu-west-1]
                        [--hours 24] [--json]

Needs boto3 (`pip install 'nettle[cloud]'`) and AWS credentials (environment, profile or role).
Without --regions every region the account has enabled is searched.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from nettle.errors import ExitCode

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cloud", help="cloud helpers: spot prices per GPU", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    verbs = p.add_subparsers(dest="cloud_verb", metavar="ACTION", required=True)
    q = verbs.add_parser("prices", help="cheapest recent spot price per instance type and GPU")
    q.add_argument("--instance-types", required=True, help="comma-separated, e.g. g5.xlarge")
    q.add_argument("--regions", default=None, help="comma-separated (default: every region)")
    q.add_argument("--hours", type=float, default=24.0, help="price history window (24)")
    q.add_argument("--json", action="store_true", help="print JSON only")
    q.set_defaults(func=run)


def _money(v: float | None) -> str:
    return "" if v is None else f"${v:.4f}"


MAX_HOURS = 90 * 24
"""AWS keeps 90 days of spot price history."""


def _check_options(args: argparse.Namespace) -> None:
    """Refuse a window or lists no lookup can use, naming the option, before any request."""
    if not 0 < args.hours <= MAX_HOURS:  # also refuses nan
        raise ValueError(
            f"--hours {args.hours}: expected hours above 0 and at most {MAX_HOURS} "
            "(AWS keeps 90 days of spot prices)"
        )
    for option, text in (("--instance-types", args.instance_types), ("--regions", args.regions)):
        if text is not None and not any(part.strip() for part in text.split(",")):
            raise ValueError(f"{option} {text!r}: expected names joined by commas")


def run(args: argparse.Namespace, client_factory=None) -> int:
    """Look the prices up and print them as a table (or JSON)."""
    from nettle.cloud.prices import CloudError, spot_prices

    _check_options(args)
    regions = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else None
    try:
        report = spot_prices(
            args.instance_types.split(","), regions, args.hours, client_factory=client_factory
        )
    except CloudError as exc:
        print(f"nettle cloud: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    table = Table(
        title=f"spot prices, Linux/UNIX, last {report.hours:g} h, {len(report.regions)} regions"
    )
    for col in ("type", "GPUs", "$/h", "$/GPU-h", "zone", "zones", "seen (UTC)"):
        right = col in ("GPUs", "$/h", "$/GPU-h", "zones")
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for o in report.offers:
        table.add_row(
            o.instance_type,
            "" if o.gpus is None else str(o.gpus),
            _money(o.price) if o.price is not None else "no offer",
            _money(o.price_per_gpu),
            o.zone or "",
            str(o.zones_seen),
            (o.timestamp or "")[5:16].replace("T", " "),
        )
    out = Console()
    out.print(table)
    if report.gpu_source == "table":
        out.print("GPU counts from nettle's table (describe_instance_types not permitted)")
    for region, error in report.errors.items():
        out.print(f"[yellow]{region}: skipped ({error})[/]")
    return 0
