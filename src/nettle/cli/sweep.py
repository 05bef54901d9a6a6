"""`nettle sweep plan|run FILE`: the runs a sweep file expands to, and running them.

    nettle sweep plan FILE [--root DIR] [--store PATH] [--json]
    nettle sweep run FILE [--gpus 0,1 | --slots N] [--retries K] [--preflight]
                          [--mem-limit-gb G] [--grace S] [--root DIR] [--store PATH] [--json]
    nettle sweep run FILE --backend ray [--address auto] [--gpus-per-run G] [--cpus-per-run C]
    nettle sweep run FILE --backend slurm [--partition P] [--time MIN] [--gpus-per-node G]
                          [--cpus-per-run C] [--mem-gb M] [--slurm-folder DIR]

Runs go to `<root>/<sweep>/<run id>/` (root `runs`), the store to `<root>/nettle.db`. Rerunning
`sweep run` skips finished runs and resumes the others from their checkpoints; Ctrl-C stops
every job and marks it preempted. `--backend ray` runs one Ray task per run on a Ray cluster,
`--backend slurm` one Slurm job per run through submitit (requeued on preemption); both need
ROOT on a filesystem the nodes share, and their extra (`pip install 'nettle[ray]'`,
`'nettle[slurm]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from nettle.cli._sweep_search import add_search_parser
from nettle.errors import ExitCode

__all__ = ["add_parser", "run"]

_STYLE = {"done": "green", "failed": "red", "running": "cyan", "preempted": "yellow"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="sweep files: plan the runs, run them", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    verbs = p.add_subparsers(dest="sweep_verb", metavar="ACTION", required=True)
    plan = verbs.add_parser("plan", help="list the runs of a sweep file and their status")
    go = verbs.add_parser("run", help="run the unfinished runs of a sweep file in parallel")
    add_search_parser(verbs)
    for q in (plan, go):
        q.add_argument("file", help="sweep YAML file")
        q.add_argument("--root", default="runs", help="runs go to ROOT/<sweep>/<id> (runs)")
        q.add_argument("--store", default=None, help="run store (default ROOT/nettle.db)")
        q.add_argument("--json", action="store_true", help="print JSON only")
        q.set_defaults(func=run)
    plan.add_argument(
        "--price",
        type=float,
        default=None,
        metavar="USD_PER_HOUR",
        help="estimate hours and cost of the unfinished runs from finished runs in the store",
    )
    go.add_argument("--gpus", default=None, help="GPU ids, one job per GPU, e.g. 0,1,2")
    go.add_argument("--slots", type=int, default=None, help="CPU slots (or jobs per GPU)")
    go.add_argument("--retries", type=int, default=1, help="extra attempts of a failed run (1)")
    go.add_argument("--preflight", action="store_true", help="one training step of every run first")
    go.add_argument(
        "--mem-limit-gb",
        type=float,
        default=None,
        help="virtual-memory limit per job (RLIMIT_AS; importing torch maps ~3.5 GB; CPU jobs)",
    )
    go.add_argument("--grace", type=float, default=10.0, help="s between SIGTERM and SIGKILL")
    go.add_argument(
        "--backend",
        choices=("local", "ray", "slurm"),
        default="local",
        help="where jobs run: local slots (default), a Ray cluster, Slurm through submitit",
    )
    cluster = go.add_argument_group("ray and slurm")
    cluster.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    cluster.add_argument("--gpus-per-run", type=float, default=0, help="Ray GPUs per run (0)")
    cluster.add_argument(
        "--cpus-per-run", type=float, default=1, help="CPUs (and threads) per run (1)"
    )
    cluster.add_argument("--partition", default=None, help="Slurm partition")
    cluster.add_argument("--time", type=int, default=60, help="Slurm time limit in minutes (60)")
    cluster.add_argument("--gpus-per-node", type=int, default=0, help="Slurm GPUs per job (0)")
    cluster.add_argument("--mem-gb", type=float, default=None, help="Slurm memory per job")
    cluster.add_argument(
        "--slurm-folder", default=None, help="submitit logs (ROOT/<sweep>/.submitit/%%j)"
    )


def run(args: argparse.Namespace) -> int:
    from nettle.experiment.spec import plan_sweep

    if args.sweep_verb == "run":
        _check_run_options(args)
    plan = plan_sweep(args.file)
    store_path = Path(args.store or Path(args.root) / "nettle.db")
    if args.sweep_verb == "plan":
        return _plan(plan, store_path, args.json, args.price)
    return _run(plan, store_path, args)


def _check_run_options(args: argparse.Namespace) -> None:
    """Refuse what no backend can use, naming the option, before the store or a job exists."""
    import math

    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--root {root}: a file, not a folder for the runs")
    whole = {"--slots": (args.slots, 1), "--retries": (args.retries, 0), "--time": (args.time, 1)}
    whole["--gpus-per-node"] = (args.gpus_per_node, 0)
    for option, (value, low) in whole.items():
        if value is not None and value < low:
            raise ValueError(f"{option} {value}: expected a whole number of at least {low}")
    amounts = {"--grace": (args.grace, True), "--gpus-per-run": (args.gpus_per_run, True)}
    amounts |= {"--cpus-per-run": (args.cpus_per_run, False)}
    amounts |= {"--mem-limit-gb": (args.mem_limit_gb, False), "--mem-gb": (args.mem_gb, False)}
    for option, (value, zero_ok) in amounts.items():
        if value is not None and not (
            math.isfinite(value) and (value >= 0 if zero_ok else value > 0)
        ):
            above = "0 or more" if zero_ok else "above 0"
            raise ValueError(f"{option} {value}: expected a finite number {above}")
    if args.gpus is not None and args.backend == "local":
        _check_gpus(args.gpus)


def _check_gpus(text: str) -> None:
    """`--gpus`: ids of GPUs this machine has (0,1) or their UUIDs (GPU-..., MIG-...)."""
    import torch

    ids = [part.strip() for part in text.split(",")]
    for gpu in ids:
        if not (gpu.isascii() and gpu.isdigit()) and not gpu.startswith(("GPU-", "MIG-")):
            raise ValueError(f"--gpus: {gpu!r} is not one GPU id (use 0,1,2 or GPU UUIDs)")
    visible = torch.cuda.device_count()
    missing = [gpu for gpu in ids if gpu.isdigit() and int(gpu) >= visible]
    if missing:
        raise ValueError(
            f"--gpus {text}: no GPU {missing[0]} here ({visible} visible); "
            + ("use --slots N for CPU jobs" if visible == 0 else f"ids are 0..{visible - 1}")
        )


def _plan(plan: Any, store_path: Path, as_json: bool, price: float | None) -> int:
    from nettle.experiment.resolve import plan_cost
    from nettle.experiment.store import Store

    status, estimate, store = {}, None, None
    if store_path.exists():  # a folder or a file that is no store is refused, not skipped
        store = Store(store_path, create=False)
        status = {r["id"]: r["status"] for r in store.query(sweep=plan.name)}
    if price is not None:
        from nettle.experiment.estimate import estimate_sweep

        estimate = estimate_sweep(plan, store, price)
    rows = [
        {"id": r.id, "name": r.name, "overrides": r.overrides, "status": status.get(r.id, "new")}
        | plan_cost(r.config)
        for r in plan.runs
    ]
    if as_json:
        out = {"sweep": plan.name, "runs": rows}
        print(json.dumps(out | ({"estimate": estimate.to_dict()} if estimate else {})))
        return 0
    table = Table(title=f"sweep {plan.name}: {len(rows)} runs")
    for col in ("id", "run", "params", "MACs", "status"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in rows:
        table.add_row(r["id"], r["name"], f"{r['params']:,}", f"{r['macs']:,}", r["status"])
    console = Console()
    console.print(table)
    if estimate is not None:
        _print_estimate(console, estimate, price)
    return 0


def _print_estimate(console: Console, est: Any, price: float) -> None:
    if est.hours is None:
        for why in sorted(set(est.unknown.values())):
            n = sum(1 for w in est.unknown.values() if w == why)
            console.print(f"cannot estimate {n} run(s): {why}", highlight=False)
        return
    console.print(
        f"estimate: {est.hours:.2f} h for {len(est.estimated)} unfinished runs, "
        f"${est.usd:,.2f} at ${price:g}/h",
        highlight=False,
    )


class _Board:
    """The live state of every run, fed by the scheduler's events."""

    def __init__(self, plan: Any) -> None:
        self.name = plan.name
        self.rows = {r.id: {"name": r.name, "status": "queued", "note": ""} for r in plan.runs}
        self.started: dict[str, float] = {}
        self.messages: list[str] = []

    def event(self, event: str, info: dict[str, Any]) -> None:
        row = self.rows.get(info.get("id", ""), {})
        if event == "skip":
            row.update(status="done", note="already done")
        elif event == "start":
            row.update(status="running", slot=info["slot"], attempt=info["attempt"], note="")
            self.started[info["id"]] = time.monotonic()
        elif event == "epoch":
            acc = info.get("test_acc")
            row.update(epoch=info["epoch"], note=f"test acc {acc:.2%}" if acc is not None else "")
        elif event in ("done", "preempted"):
            row.update(status=event, note=info.get("reason") or row.get("note", ""))
        elif event == "failed":
            status = "retrying" if info["retry"] else "failed"
            row.update(status=status, note=info["reason"])
        elif event == "preflight":
            row.update(status="checked" if info["ok"] else "failed", note=info.get("error") or "")
        elif event in ("stale", "busy"):
            self.messages.append(
                f"{info['id']}: {'cleared a stale row' if event == 'stale' else 'running elsewhere'}"
            )
        elif event == "stopping":
            self.messages.append(f"{info['signal']}: stopping {info['jobs']} jobs")

    def render(self) -> Group:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        title = f"sweep {self.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        table = Table(title=title)
        table.add_column("id", no_wrap=True)
        table.add_column("run", min_width=16, overflow="fold")
        table.add_column("status", no_wrap=True)
        table.add_column("slot", no_wrap=True)
        table.add_column("epoch", no_wrap=True, justify="right")
        table.add_column("note")
        shown = self.rows.items()
        if len(self.rows) > 30:  # big sweeps: only what is moving or went wrong
            shown = [(k, r) for k, r in shown if r["status"] not in ("queued", "done")]
        now = time.monotonic()
        for run_id, r in shown:
            note = r["note"]
            if r["status"] == "running":
                note = f"{now - self.started[run_id]:.0f}s" + (f", {note}" if note else "")
            style = _STYLE.get(r["status"], "")
            table.add_row(
                run_id,
                r["name"],
                f"[{style}]{r['status']}[/]" if style else r["status"],
                r.get("slot", "") + (f" #{r['attempt']}" if r.get("attempt", 1) > 1 else ""),
                str(r.get("epoch", "")),
                note if len(note) <= 40 else note[:39] + "…",
            )
        return Group(table, *self.messages[-5:])


def _runner(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The backend's run function and its options from the flags."""
    opts: dict[str, Any] = {"root": args.root, "retries": args.retries, "grace": args.grace}
    if args.backend == "ray":
        from nettle.experiment.backends.ray import run_sweep_ray

        opts |= {"address": args.address, "num_gpus_per_run": args.gpus_per_run}
        return run_sweep_ray, opts | {"num_cpus_per_run": args.cpus_per_run}
    if args.backend == "slurm":
        from nettle.experiment.backends.slurm import run_sweep_slurm

        if args.cpus_per_run != int(args.cpus_per_run) or args.cpus_per_run < 1:
            raise ValueError("--cpus-per-run must be a whole number >= 1 for slurm")
        opts |= {"partition": args.partition, "time_min": args.time, "mem_gb": args.mem_gb}
        opts |= {"gpus_per_node": args.gpus_per_node, "cpus_per_task": int(args.cpus_per_run)}
        return run_sweep_slurm, opts | {"folder": args.slurm_folder}
    from nettle.experiment.schedule import run_sweep

    gpus = args.gpus.split(",") if args.gpus else None
    opts |= {"gpus": gpus, "slots": args.slots, "mem_limit_gb": args.mem_limit_gb}
    return run_sweep, opts | {"preflight": args.preflight}


def _run(plan: Any, store_path: Path, args: argparse.Namespace) -> int:
    try:
        run_sweep, opts = _runner(args)
    except ImportError as exc:  # a backend's extra is not installed
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if args.json:
        result = run_sweep(plan, store_path, **opts)
        print(json.dumps(result.to_dict()))
    else:
        board = _Board(plan)
        with Live(board.render(), console=Console(stderr=True), refresh_per_second=4) as live:

            def progress(event: str, info: dict[str, Any]) -> None:
                board.event(event, info)
                live.update(board.render())

            result = run_sweep(plan, store_path, progress=progress, **opts)
        _print_result(result, store_path)
    if result.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if result.ok else ExitCode.FAILED


def _print_result(result: Any, store_path: Path) -> None:
    out = Console()
    bad = [p for p in result.preflight if not p["ok"]]
    if bad:
        table = Table(title=f"preflight: {len(bad)} of {len(result.preflight)} runs fail")
        for col in ("id", "run", "error"):
            table.add_column(col, overflow="fold")
        for p in bad:
            table.add_row(
                p["id"], p.get("name", ""), ("OOM: " if p.get("oom") else "") + p["error"]
            )
        out.print(table)
    for run_id, reason in result.failed.items():
        out.print(f"[red]failed[/] {run_id}: {reason}")
    out.print(
        f"sweep {result.sweep}: {len(result.done)} done, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed, {len(result.preempted)} preempted, "
        f"{len(result.busy)} running elsewhere in {result.seconds:.1f}s; store {store_path}"
    )
