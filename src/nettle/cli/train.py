"""`nettle train CONFIG.yaml [-o RUN_DIR] [--set key=value ...] [--json]`.

Data-parallel on several devices or processes: `torchrun --nproc-per-node N -m nettle train ...`
(the same arguments); rank 0 prints and writes the run dir, the other ranks print nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nettle.errors import ExitCode

__all__ = ["add_parser", "format_epoch", "phase_table", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config into a run dir (resumes an interrupted run)",
        description=(
            "Train from CONFIG.yaml into a run dir. Rerunning the same command resumes an "
            "interrupted run exactly and reports a finished one. Exit status: 0 done, "
            "2 bad input, 3 stopped on a NaN/Inf loss (a debug snapshot is saved). "
            "Data-parallel training (DistributedDataParallel): launch the same command with "
            "torchrun, e.g. `torchrun --nproc-per-node 2 -m nettle train CONFIG -o DIR` (or "
            "`python -m torch.distributed.run ...`); one process per GPU (NCCL), or CPU "
            "processes (Gloo) when train.device is cpu. data.batch_size is per process: the "
            "global batch is batch_size x processes, so scale optim.lr with it (linear rule "
            "for SGD). Each epoch drops the last (processes - 1) or fewer examples of its "
            "shuffled order so the shards are equal; test metrics cover the whole test set; "
            "rank 0 alone writes the run dir; rerunning the command resumes exactly; "
            "distill runs need a single process."
        ),
    )
    p.add_argument("config", help="YAML config file")
    p.add_argument("-o", "--out", default=None, help="run dir (default runs/<name>/<config id>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    p.add_argument(
        "--store",
        default=None,
        help="run store to record the run in (default: the nettle.db of the root the run dir "
        "is under, runs/nettle.db for runs/<name>/<id>)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    p.set_defaults(func=run)


def phase_table(phases: dict[str, float], title: str = "where the step time went") -> Table:
    """A rich table of phase totals and shares."""
    whole = sum(phases.values()) or 1.0
    table = Table(title=title)
    for col in ("phase", "seconds", "share"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for name, secs in sorted(phases.items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{secs:.2f}", f"{secs / whole:.1%}")
    return table


def format_epoch(record: dict[str, Any]) -> str:
    """One line per epoch: losses, accuracies, time, then where the step time went."""
    acc = record.get("test_acc")
    head = (
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
        f"train acc {record['train_acc']:.2%}"
        + (f", test acc {acc:.2%}" if acc is not None else "")
        + (f", test CER {record['test_cer']:.2%}" if "test_cer" in record else "")
        + f", lr {record['lr']:.3g}, {record['time']:.1f}s"
    )
    shares, medians = record.get("phase_shares", {}), record.get("phase_medians", {})
    parts = [
        f"{name} {share:.0%} ({medians.get(name, 0.0) * 1e3:.2f} ms)"
        for name, share in sorted(shares.items(), key=lambda kv: -kv[1])
    ]
    return head + ("\n  phases (share, median per step): " + ", ".join(parts) if parts else "")


def _train_and_record(
    cfg: Any, run_dir: Any, store_path: str | None, quiet: bool, progress: Any
) -> tuple[dict[str, Any], Any]:
    """The run's job (train, then its evaluation stages), recorded in the store by rank 0.

    The store is written only once training starts (a refused run leaves it as it was); an
    existing store that cannot be used is refused before anything runs.
    """
    from nettle.config import config_hash
    from nettle.experiment.job import run_job
    from nettle.experiment.record import code_version, record_run, store_path_for
    from nettle.experiment.store import Store
    from nettle.train.guards import NonFiniteLossError

    path = None if quiet else store_path_for(run_dir, store_path)
    if path is not None and path.exists():
        Store(path, create=False)  # a broken store is named now, not after training
    run_id, opened = config_hash(cfg), {}

    def open_row() -> Store:
        if "store" not in opened:
            store = opened["store"] = Store(path)
            config = cfg.model_dump(mode="json")
            store.add_run(run_id, config, sweep=cfg.name, name=cfg.name, run_dir=str(run_dir))
        return opened["store"]

    def on_progress(event: str, info: dict[str, Any]) -> None:
        if event == "start" and path is not None and "store" not in opened:
            open_row().set_status(run_id, "running", pid=os.getpid(), code_version=code_version())
        progress(event, info)

    try:
        summary, stages = run_job(cfg, run_dir, progress=on_progress)
    except NonFiniteLossError as exc:
        if "store" in opened:
            opened["store"].record_failure(run_id, f"non-finite loss: {exc}")
        raise
    except BaseException as exc:
        if "store" in opened:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)[:300]
            status = "preempted" if isinstance(exc, KeyboardInterrupt) else "failed"
            opened["store"].set_status(run_id, status, reason=reason or type(exc).__name__)
        raise
    if path is not None:
        record_run(open_row(), run_id, Path(run_dir), cfg)
    return summary, stages


def run(args: argparse.Namespace) -> int:
    from nettle.config import load_config
    from nettle.experiment.resolve import resolve_config
    from nettle.experiment.run import default_run_dir
    from nettle.train.guards import NonFiniteLossError

    cfg = resolve_config(load_config(args.config, args.overrides))
    run_dir = args.out or default_run_dir(cfg)
    quiet = os.environ.get("RANK", "0") != "0"  # torchrun: only rank 0 reports
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=err,
        disable=args.json or quiet,
        transient=True,
    ) as bar:
        task = bar.add_task(cfg.name, total=None, info="")

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "start":
                bar.update(task, total=info["steps"], completed=info["step"])
            elif event == "step":
                bar.update(task, completed=info["step"], info=f"loss {info['loss']:.3f}")
            elif event == "epoch" and not (args.json or quiet):
                bar.console.print(format_epoch(info), highlight=False, soft_wrap=True)

        try:
            summary, stages = _train_and_record(cfg, run_dir, args.store, quiet, progress)
        except NonFiniteLossError as exc:
            bar.stop()
            print(f"nettle train: stopped: {exc}", file=sys.stderr)
            return ExitCode.NONFINITE
    summary = summary | stages.metrics()
    if quiet:
        return 0
    if args.json:
        print(json.dumps(summary | {"run_dir": str(run_dir)}, default=str))
        return 0
    out = Console()
    if summary.get("phases"):
        out.print(phase_table(summary["phases"]))
    if summary.get("setup_time") is not None:
        out.print(f"setup (data, model; once): {summary['setup_time']:.2f} s", highlight=False)
    if isinstance(summary.get("bayes"), dict):  # Bayesian compression (nettle.compress.bayes)
        text = summary["bayes"].get("text", "")
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    best = summary.get("best_test_acc")
    out.print(
        f"run dir: {run_dir}  status: {summary['status']}"
        + (f"  best test acc: {best:.2%}" if best is not None else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0
