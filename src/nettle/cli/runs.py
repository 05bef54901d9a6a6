"""`nettle runs [--sweep S] [--status S] [--where EXPR ...] [--code-changed]
[--format table|json|csv] [--metrics K,..] [--store PATH]`.

Filters: `--where test_acc>0.9` (a metric), `--where train.optim.lr=0.1` (a config key),
`--where status=failed` (a column); repeat to combine (AND). `--code-changed` keeps the runs
recorded with a code version other than the current one (runs that never started have none).

Formats: `table` (for people: id, name, status, params, MACs, test accuracy, worst robust
accuracy; the least important columns are dropped on a narrow terminal), `json` (the store's
rows; `--json` is the same), `csv` (one row per run: id, sweep, name, status, code_version and
every metric of any row, sorted).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from nettle.experiment import record
from nettle.experiment.store import Store

__all__ = [
    "add_parser",
    "csv_rows",
    "format_count",
    "format_percent",
    "format_table",
    "run",
    "table_columns",
    "worst_robust_accuracy",
]

CSV_COLUMNS = ("id", "sweep", "name", "status", "code_version")
_ROBUST_KEY = re.compile(r"^robust_acc_.+_eps")
_UNITS = ("k", "M", "G", "T", "P")
_BUILT_IN = ("params", "macs", "test_acc", "test_top5")  # metrics with a column of their own
_NAME_MIN = 12  # the name column is shortened (…) down to this width before others go


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="query the run store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        "--code-changed",
        action="store_true",
        help="only runs recorded with a code version other than the current one",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument(
        "--metrics",
        default="",
        help="extra metric columns of the table, e.g. best_test_acc,train_loss; 'all' for every one",
    )
    p.add_argument("--store", default="runs/nettle.db")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not Path(args.store).is_file():
        raise FileNotFoundError(f"{args.store}: no run store")
    rows = Store(args.store, create=False).query(args.sweep, args.status, args.where)
    if args.code_changed:
        current = record.code_version()
        if current is None:
            raise ValueError("--code-changed: the current code version is unknown")
        rows = [r for r in rows if r["code_version"] and r["code_version"] != current]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(rows, default=str))
    elif fmt == "csv":
        csv.writer(sys.stdout, lineterminator="\n").writerows(csv_rows(rows, args.sweep))
    else:
        _print_table(rows, args)
    return 0


# --- numbers for people -----------------------------------------------------------------------


def format_count(n: float | None) -> str:
    """A count in three significant digits with k/M/G/T/P (powers of 1000); "" for None.

    Example:
        >>> [format_count(n) for n in (850, 94_213, 1_199_882, 2_379_008, 5.24e9, 999_999)]
        ['850', '94.2k', '1.20M', '2.38M', '5.24G', '1.00M']
    """
    if n is None:
        return ""
    if abs(n) < 999.5:
        return f"{n:.0f}"
    for i, unit in enumerate(_UNITS):
        scaled = n / 1000 ** (i + 1)
        for digits in (2, 1, 0):
            text = f"{scaled:.{digits}f}"
            if abs(float(text)) < 10 ** (3 - digits):
                break
        if abs(float(text)) < 1000 or unit == _UNITS[-1]:
            return text + unit
    raise AssertionError("unreachable")  # pragma: no cover


def format_percent(fraction: float | None) -> str:
    """A fraction in [0, 1] as a percentage with two decimals ("99.72"); "" for None."""
    return "" if fraction is None else f"{100 * fraction:.2f}"


def worst_robust_accuracy(row: dict[str, Any]) -> float | None:
    """The lowest robust accuracy recorded for a run (over attacks and epsilons), or None.

    Read from the store's robustness rows and from `robust_acc_<attack>_eps<e>` metrics."""
    values = [float(r["accuracy"]) for r in row.get("robustness") or []]
    values += [float(v) for k, v in row["metrics"].items() if _ROBUST_KEY.match(k)]
    return min(values) if values else None


# --- table ------------------------------------------------------------------------------------

Column = tuple[str, Callable[[dict[str, Any]], str], bool]  # heading, cell, right-aligned


def _metric(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(row: dict[str, Any]) -> str:
        value = row["metrics"].get(key)
        if value is None:
            return ""
        if key in ("params", "macs", "macs_executed"):
            return format_count(value)
        if "acc" in key or key.startswith("test_top"):
            return format_percent(value)
        return f"{value:.4g}"

    return cell


def _heading(key: str) -> str:
    percent = "acc" in key or key.startswith("test_top")
    return f"{key} %" if percent else key


def table_columns(
    rows: Sequence[dict[str, Any]], width: int, extra: Sequence[str] = ()
) -> list[Column]:
    """The table's columns for `rows` in a terminal `width` characters wide.

    Always id (8 characters), status and test accuracy; then, as long as they fit, name
    (shortened with … down to 12 characters), worst robust accuracy (when a run has one),
    params, MACs and top-5 accuracy (when a run has them): the last of these go first. `extra`
    metric keys are always shown.
    """
    have = {k for r in rows for k in r["metrics"]}
    shown = {
        "params": "params" in have,
        "MACs": "macs" in have,
        "top5 %": "test_top5" in have,
        "robust %": any(worst_robust_accuracy(r) is not None for r in rows),
    }
    ranked: list[tuple[int, Column]] = [  # (rank: the higher goes first when narrow, column)
        (0, ("id", lambda r: r["id"][:8], False)),
        (5, ("name", lambda r: r["name"] or "", False)),
        (0, ("status", lambda r: r["status"], False)),
        (3, ("params", _metric("params"), True)),
        (2, ("MACs", _metric("macs"), True)),
        (0, ("acc %", _metric("test_acc"), True)),
        (1, ("top5 %", _metric("test_top5"), True)),
        (4, ("robust %", lambda r: format_percent(worst_robust_accuracy(r)), True)),
    ]
    ranked = [(rank, c) for rank, c in ranked if shown.get(c[0], True)]
    ranked += [(0, (_heading(k), _metric(k), True)) for k in extra if k not in _BUILT_IN]
    for rank in (1, 2, 3, 4, 5):
        if _table_width([c for _, c in ranked], rows, _NAME_MIN) <= width:
            break
        ranked = [(k, c) for k, c in ranked if k != rank]
    return [c for _, c in ranked]


def _widths(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[int]:
    return [max([len(head), *(len(cell(r)) for r in rows)]) for head, cell, _ in columns]


def _table_width(columns: Sequence[Column], rows: Sequence[dict[str, Any]], name: int) -> int:
    """Characters of the table with the name column at most `name` wide (each column is
    padded by a space on each side and separated by one; one more for the edges)."""
    widths = _widths(columns, rows)
    widths = [min(w, name) if c[0] == "name" else w for c, w in zip(columns, widths)]
    return sum(w + 3 for w in widths) + 1


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], width: int) -> Table:
    """A rich table of `rows` in `columns`, whose name column takes the width left."""
    widths = _widths(columns, rows)
    if any(head == "name" for head, _, _ in columns):
        spare = width - _table_width(columns, rows, 0)
        widths = [
            max(min(w, spare), _NAME_MIN) if head == "name" else w
            for (head, _, _), w in zip(columns, widths)
        ]
    table = Table(box=box.SIMPLE_HEAD)
    for (head, _, right), w in zip(columns, widths):
        justify = "right" if right else "left"
        table.add_column(head, justify=justify, no_wrap=True, overflow="ellipsis", width=w)
    for r in rows:
        table.add_row(*(cell(r) for _, cell, _ in columns))
    return table


def _print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    console = Console(highlight=False)
    have = sorted({k for r in rows for k in r["metrics"]})
    wanted = [k for k in args.metrics.split(",") if k]
    extra = have if args.metrics == "all" else [k for k in wanted if k in have]
    columns = table_columns(rows, console.width, extra)
    console.print(f"{len(rows)} runs in {args.store}", soft_wrap=True)
    console.print(format_table(rows, columns, console.width))
    for r in rows:
        if r["reason"]:
            console.print(f"{r['id'][:8]} {r['status']}: {r['reason']}", soft_wrap=True)


# --- CSV --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Whole floats as integers (params 94213, not 94213.0); None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def csv_rows(rows: Sequence[dict[str, Any]], sweep: str | None = None) -> list[list[Any]]:
    """The header and one row per run: id, sweep, name, status, code_version and every metric
    key of any row, sorted. `sweep`: the sweep asked for (a run may belong to several)."""
    keys = sorted({k for r in rows for k in r["metrics"]})
    out: list[list[Any]] = [[*CSV_COLUMNS, *keys]]
    for r in rows:
        fixed = [r["id"], sweep or r["sweep"], r["name"], r["status"], r["code_version"]]
        out.append([_plain(v) for v in fixed] + [_plain(r["metrics"].get(k)) for k in keys])
    return out
