"""`nettle sweep search FILE --trials N`: hyper-parameter search over sweep runs (Optuna).

    nettle sweep search FILE --trials N [--slots K] [--metric test_acc --direction maximize]
                             [--sampler tpe|random|nsga2|nsga3] [--pruner median|...|none]
                             [--seed S] [--retries R] [--root DIR] [--store PATH] [--json]

The file's `search:` section declares the space, the objectives (several: the Pareto front),
constraints such as `params <= 20000`, the sampler and the pruner (see
`nettle.experiment.search_space`). A trial starts whenever a slot frees. Every trial is an
ordinary run in the store under the file's sweep name (`nettle runs --sweep NAME`, `nettle
report NAME`: the front and the infeasible trials); the study lives beside the store
(`ROOT/nettle-search.db`), so calling again adds N more trials.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from nettle.errors import ExitCode

__all__ = ["add_search_parser", "run_search_cli"]


def add_search_parser(verbs: argparse._SubParsersAction) -> None:
    """Add the `search` action to the `sweep` verb's subparsers."""
    p = verbs.add_parser(
        "search", help="hyper-parameter search: Optuna proposes runs", description=__doc__
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("file", help="sweep YAML file with a search: section")
    p.add_argument("--trials", type=int, required=True, help="new trials to run")
    p.add_argument("--slots", type=int, default=1, help="trials run at a time (1)")
    p.add_argument("--metric", default=None, help="one objective instead of the file's")
    p.add_argument("--direction", choices=("maximize", "minimize"), default=None)
    p.add_argument(
        "--sampler",
        choices=("tpe", "random", "nsga2", "nsga3"),
        default=None,
        help="instead of the file's (default: tpe for one objective, nsga2 for several)",
    )
    p.add_argument(
        "--pruner",
        choices=("median", "percentile", "successive_halving", "hyperband", "threshold", "none"),
        default=None,
        help="instead of the file's (default: median for one objective, none for several)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (0)")
    p.add_argument("--retries", type=int, default=1, help="extra attempts of a failed run (1)")
    p.add_argument("--root", default="runs", help="runs go to ROOT/<sweep>/<id> (runs)")
    p.add_argument("--store", default=None, help="run store (default ROOT/nettle.db)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run_search_cli)


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _check_options(args: argparse.Namespace) -> None:
    """Refuse counts and seeds a search cannot use, naming the option, before any file exists."""
    for option, value, low in (
        ("--trials", args.trials, 1),
        ("--slots", args.slots, 1),
        ("--retries", args.retries, 0),
    ):
        if value < low:
            raise ValueError(f"{option} {value}: expected a whole number of at least {low}")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed {args.seed}: expected a seed from 0 to 2**32 - 1")


def run_search_cli(args: argparse.Namespace) -> int:
    """Run the search and print each trial, then the best trial and its run."""
    _check_options(args)
    try:
        import optuna

        from nettle.experiment.search import run_search
        from nettle.experiment.search_report import format_value
    except ImportError:
        print("error: search needs Optuna: pip install 'nettle[search]'", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if not getattr(args, "verbose", False):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    err = Console(stderr=True)

    def progress(event: str, info: dict[str, Any]) -> None:
        if event == "trial" and not args.json:
            value = " ".join(format_value(v) for v in info["values"] or [])
            note = " (stored result)" if info["reused"] else ""
            note += " infeasible" if info["feasible"] is False else ""
            note += f" {info['reason']}" if info["reason"] else ""
            line = f"trial {info['number']} {info['state']} {value} {_fmt(info['params'])}{note}"
            err.print(line, soft_wrap=True, highlight=False)

    result = run_search(
        args.file,
        args.trials,
        args.store,
        root=args.root,
        slots=args.slots,
        metric=args.metric,
        direction=args.direction,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        retries=args.retries,
        progress=progress,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_result(result)
    if result.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if result.front else ExitCode.FAILED


def _values(t: Any) -> list[str]:
    from nettle.experiment.search_report import format_value

    return [format_value(v) for v in t.values] if t.values else [""]


def _print_result(result: Any) -> None:
    out = Console()
    metrics = [o["metric"] for o in result.objectives]
    table = Table(title=f"search {result.sweep}: {len(result.trials)} trials this call")
    for col in ("trial", "state", *metrics, "feasible", "values", "run"):
        table.add_column(col, overflow="fold")
    for t in result.trials:
        values = _values(t) + [""] * (len(metrics) - len(_values(t)))
        feasible = "" if t.feasible is None or not result.constraints else str(t.feasible).lower()
        note = t.reason if t.state != "complete" and t.reason else _fmt(t.params)
        table.add_row(str(t.number), t.state, *values, feasible, note, t.run_id or "")
    out.print(table)
    limits = f", constraints {', '.join(result.constraints)}" if result.constraints else ""
    out.print(
        f"study {result.sweep}: {result.total_trials} trials in {result.study}{limits}",
        soft_wrap=True,
    )
    if not result.front:
        out.print("[red]no trial has finished within the constraints[/]")
        return
    if result.best is not None:
        b = result.best
        out.print(
            f"best: trial {b.number}, {result.metric} = {b.value:.4g} ({result.direction}), "
            f"{_fmt(b.params)}; run {b.run_id} in {result.best_run_dir}"
        )
        return
    out.print(f"Pareto front ({', '.join(metrics)}): {len(result.front)} trials")
    for t in result.front:
        shown = ", ".join(f"{m} = {v}" for m, v in zip(metrics, _values(t)))
        out.print(f"  trial {t.number}: {shown}; {_fmt(t.params)}; run {t.run_id}", soft_wrap=True)
