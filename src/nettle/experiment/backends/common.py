"""What the cluster backends share: the driver's bookkeeping and the body of one job.

The driver (the process that calls `run_sweep_ray` / `run_sweep_slurm`) is the only writer of
the store: it records the runs, skips the done ones, claims each run before handing it to the
cluster, and records the report every job returns, with the statuses and reasons of the local
scheduler (`worker.classify_exit`). A job (`run_job`, on any node) runs the same command as the
local scheduler (`nettle train CONFIG -o RUN_DIR --json`) in its own process group, appends
its output to the run dir's log.txt and returns a plain report; so run dirs must be on a
filesystem that the driver and every worker share (NFS, Lustre, ...).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nettle.experiment import worker
from nettle.experiment.record import (
    code_version,
    default_command,
    record_outcome,
    record_plan,
    run_dir_of,
    settle,
    write_job_config,
)
from nettle.experiment.schedule import SweepResult
from nettle.experiment.spec import PlannedRun, SweepPlan
from nettle.experiment.store import Store
from nettle.experiment.worker import Outcome

__all__ = ["Driver", "default_command", "job_env", "missing_extra", "resolve", "run_job"]

Progress = Callable[[str, dict[str, Any]], None]
Command = Callable[[Path, Path], Sequence[str]]


def missing_extra(module: str, extra: str) -> ImportError:
    """The error raised when an optional backend's package is not installed."""
    return ImportError(
        f"the {extra} backend needs the {module!r} package: pip install 'nettle[{extra}]'"
    )


def job_env(run_id: str, sweep: str, threads: int, gpus: bool) -> dict[str, str]:
    """The environment of a job on this node: marker, thread count, no GPU unless given one."""
    env = {**os.environ, worker.MARKER: run_id, "NETTLE_SWEEP": sweep}
    n = str(max(1, int(threads)))
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_job(
    argv: Sequence[str],
    run_dir: Path,
    env: dict[str, str],
    header: str,
    grace: float = 10.0,
    on_start: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run one job to its end on this node and report how it ended (plain data).

    Output is appended to `run_dir/log.txt` after `header`. An exception raised while waiting
    (KeyboardInterrupt from a cancellation, SystemExit from a requeue) stops the job's whole
    process group (SIGTERM, SIGKILL after `grace` s) before it propagates.
    """
    run_dir = Path(run_dir)
    with open(run_dir / "log.txt", "ab") as log:
        offset = log.tell()
        log.write(f"{header}, {socket.gethostname()}\n".encode())
        log.flush()
        t0 = time.monotonic()
        proc = worker.start_job(argv, log, env)
        if on_start is not None:
            on_start(proc)
        try:
            while proc.poll() is None:
                time.sleep(0.02)
        except BaseException:
            worker.stop_group(proc.pid, grace, proc)
            raise
        finally:
            worker.reap_group(proc.pid)
    return {
        "returncode": proc.returncode,
        "summary": worker.read_summary(run_dir),
        "log": worker.log_tail(run_dir / "log.txt", offset, lines=200),
        "host": socket.gethostname(),
        "pid": proc.pid,
        "seconds": time.monotonic() - t0,
    }


class Driver:
    """The driver side of a cluster sweep: prepare the runs, claim them, record reports."""

    def __init__(
        self,
        plan: SweepPlan,
        store: Store,
        root: Path,
        retries: int,
        progress: Progress | None,
        backend: str,
    ) -> None:
        self.plan, self.store, self.root, self.retries = plan, store, root, retries
        self.backend = backend
        self.emit: Progress = progress or (lambda event, info: None)
        self.result = SweepResult(plan.name)
        self.run_dirs: dict[str, Path] = {}
        self.launches: dict[str, int] = {}
        self.owner, self.host = worker.process_token(), socket.gethostname()
        self.code_version = code_version()
        self.stop_signal: int | None = None
        self.t0 = time.monotonic()

    def on_signal(self, signum: int, frame: Any) -> None:
        """Signal handler: stop submitting, cancel what runs."""
        self.stop_signal = signum

    def prepare(self) -> list[PlannedRun]:
        """Record the runs, clear rows of dead drivers, and return the runs still to do."""
        record_plan(self.store, self.plan, self.root)
        todo = []
        for run in self.plan.runs:
            row = self.store.get(run.id) or {}
            run_dir = Path(row.get("run_dir") or run_dir_of(self.root, self.plan.name, run.id))
            self.run_dirs[run.id] = run_dir
            if row.get("status") == "running":
                owner = row.get("owner")
                if row.get("host") != self.host or (owner and worker.token_alive(owner)):
                    self.result.busy.append(run.id)
                    self.emit("busy", {"id": run.id, "name": run.name, "host": row.get("host")})
                    continue
                self.store.set_status(run.id, "preempted", reason="its scheduler stopped")
                self.emit("stale", {"id": run.id, "name": run.name, "killed": 0})
            if not settle(self.store, run, run_dir, row):
                todo.append(run)
                continue
            self.result.skipped.append(run.id)
            self.emit("skip", {"id": run.id, "name": run.name})
        info = {"sweep": self.plan.name, "total": len(self.plan.runs), "todo": len(todo)}
        self.emit("plan", info | {"slots": [self.backend]})
        return sorted(todo, key=lambda r: -r.config.priority)  # higher priority first

    def claim(self, run: PlannedRun) -> tuple[Path, str] | None:
        """Write the run's config, mark it running; its config path and log header, or None."""
        run_dir = self.run_dirs[run.id]
        config = write_job_config(run, run_dir)
        if not self.store.claim(run.id, self.owner, self.code_version):
            self.result.busy.append(run.id)
            self.emit("busy", {"id": run.id, "name": run.name, "host": None})
            return None
        attempt = self.launches[run.id] = self.launches.get(run.id, 0) + 1
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        info = {"id": run.id, "name": run.name, "slot": self.backend, "attempt": attempt}
        self.emit("start", info | {"pid": None, "run_dir": str(run_dir)})
        return config, f"--- nettle sweep ({self.backend}): attempt {attempt}, {stamp}"

    def record(self, run: PlannedRun, report: dict[str, Any] | None, error: str = "") -> bool:
        """Record a job's report (or `error`, when it returned none); True to submit it again."""
        if report is None:
            outcome = Outcome("failed", error or "the job returned no report", retry=True)
            if worker.is_oom(error):
                outcome.reason = "out of memory"
            summary, log_text = None, error
        else:
            summary, log_text = report.get("summary"), report.get("log", "")
            outcome = worker.classify_exit(report["returncode"], summary, log_text)
        tail = "\n".join(log_text.splitlines()[-40:])
        missing = outcome.status == "done" and record_outcome(
            self.store, run, self.run_dirs[run.id]
        )
        if missing:
            outcome = Outcome("failed", missing, retry=True)
        if outcome.status == "done":
            self.result.done.append(run.id)
            seconds = (report or {}).get("seconds", 0.0)
            self.emit("done", {"id": run.id, "name": run.name, "seconds": seconds})
            return False
        reason = outcome.reason or "failed"
        retry = outcome.retry and self.launches.get(run.id, 0) <= self.retries
        self.store.record_failure(run.id, reason, tail)
        if not retry:
            self.result.failed[run.id] = reason
        self.emit("failed", {"id": run.id, "name": run.name, "reason": reason, "retry": retry})
        return retry

    def preempt(self, run: PlannedRun, reason: str = "stopped by the scheduler") -> None:
        """Mark a run that was stopped before it ended as preempted."""
        self.store.set_status(run.id, "preempted", reason=reason)
        self.result.preempted.append(run.id)
        self.emit("preempted", {"id": run.id, "name": run.name, "reason": reason})

    def finish(self) -> SweepResult:
        """The result of the call, with its duration."""
        self.result.interrupted = self.stop_signal is not None
        self.result.seconds = time.monotonic() - self.t0
        return self.result


def resolve(
    plan: SweepPlan | str | Path | dict[str, Any], store: Store | str | Path | None, root: Path
) -> tuple[SweepPlan, Store]:
    """A `SweepPlan` and a `Store` from what the public functions accept."""
    from nettle.experiment.spec import plan_sweep

    if not isinstance(plan, SweepPlan):
        plan = plan_sweep(plan)
    store = store if isinstance(store, Store) else Store(store or root / "nettle.db")
    return plan, store
