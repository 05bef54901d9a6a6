"""The driver of a sweep: the one writer of the store, whichever executor runs the jobs.

A sweep call (`run_sweep` on local slots, `run_sweep_ray`, `run_sweep_slurm`) owns one
`Driver`. The driver records the plan, skips runs that are finished with their config's
evaluation stages (recording those the store missed), clears the "running" rows of drivers
that died, claims each run before its job starts, and records how every job ended with the
statuses and reasons of `worker.classify_exit`: the numbers of a finished run through
`nettle.experiment.record` (training metrics, cost, robust accuracies, then "done"), a
failure with its reason and log tail, a stopped job as preempted (as pruned when a search's
pruner stopped it). Executors only start jobs
(`nettle _job CONFIG -o RUN_DIR`), watch them and hand their reports here.

A job's report is plain data: `returncode`, `summary` (its summary.json), `log` (the tail of
its output) and `seconds`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nettle.experiment import worker
from nettle.experiment.record import (
    code_version,
    record_outcome,
    record_plan,
    run_dir_of,
    settle,
    write_job_config,
)
from nettle.experiment.spec import PlannedRun, SweepPlan
from nettle.experiment.store import Store
from nettle.experiment.worker import Outcome

__all__ = ["Driver", "SweepResult"]

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class SweepResult:
    """What one sweep call did: run ids by outcome, preflight results, time."""

    sweep: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    preempted: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    preflight: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every run done (now or before), nothing failed, stopped, busy or refused."""
        bad_preflight = any(not p["ok"] for p in self.preflight)
        return not (self.failed or self.preempted or self.busy or self.interrupted or bad_preflight)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for `--json`."""
        return asdict(self) | {"ok": self.ok}


class Driver:
    """The bookkeeping of one sweep call: plan, skip, claim, record (see the module doc).

    Args:
        plan, store, root: the sweep, its store, and the root of its run dirs.
        retries: extra attempts of a failed run within this call.
        progress: callback `(event, info)`.
        backend: the executor's name, shown in events and log headers.
        kill_stale: seconds of grace to kill the process group left by a dead driver on
            this host (the local executor knows its groups); None only marks the run
            preempted (a cluster job may live on another node).
    """

    def __init__(
        self,
        plan: SweepPlan,
        store: Store,
        root: Path,
        retries: int,
        progress: Progress | None,
        backend: str,
        kill_stale: float | None = None,
    ) -> None:
        self.plan, self.store, self.root, self.retries = plan, store, Path(root), retries
        self.backend, self.kill_stale = backend, kill_stale
        self.emit: Progress = progress or (lambda event, info: None)
        self.result = SweepResult(plan.name)
        self.run_dirs: dict[str, Path] = {}
        self.launches: dict[str, int] = {}
        self.owner, self.host = worker.process_token(), socket.gethostname()
        self.code_version = code_version()
        self.stop_signal: int | None = None
        self.force = False
        self.t0 = time.monotonic()

    def on_signal(self, signum: int, frame: Any) -> None:
        """Signal handler: stop starting jobs, stop what runs (a second signal: at once)."""
        self.force = self.stop_signal is not None
        self.stop_signal = signum

    def prepare(self, slots: list[str] | None = None) -> list[PlannedRun]:
        """Record the runs, clear rows of dead drivers; the runs still to do, by priority."""
        record_plan(self.store, self.plan, self.root)
        todo = [run for run in self.plan.runs if self._admit(run)]
        info = {"sweep": self.plan.name, "total": len(self.plan.runs), "todo": len(todo)}
        self.emit("plan", info | {"slots": slots or [self.backend]})
        return sorted(todo, key=lambda r: -r.config.priority)  # stable within a priority

    def add(self, run: PlannedRun) -> bool:
        """Record a run proposed while the sweep runs (a search's trial) in the plan and the
        store; True when it is to be run, False when it is finished or running elsewhere."""
        if all(r.id != run.id for r in self.plan.runs):
            self.plan.runs.append(run)
        record_plan(self.store, SweepPlan(self.plan.name, [run]), self.root)
        return self._admit(run)

    def _admit(self, run: PlannedRun) -> bool:
        """Whether a recorded run is to be run: not running elsewhere, not finished (a run
        finished with its stages is recorded if the store missed it, and skipped)."""
        row = self.store.get(run.id) or {}
        run_dir = Path(row.get("run_dir") or run_dir_of(self.root, self.plan.name, run.id))
        self.run_dirs[run.id] = run_dir
        if row.get("status") == "running" and not self._clear_stale(run, row):
            self.result.busy.append(run.id)
            return False
        if not settle(self.store, run, run_dir, row):
            return True
        self.result.skipped.append(run.id)
        self.emit("skip", {"id": run.id, "name": run.name})
        return False

    def _clear_stale(self, run: PlannedRun, row: dict[str, Any]) -> bool:
        """Make a dead driver's "running" row preempted; False if it may really run."""
        owner = row.get("owner")
        if row.get("host") != self.host or (owner and worker.token_alive(owner)):
            self.emit("busy", {"id": run.id, "name": run.name, "host": row.get("host")})
            return False
        killed = 0
        if self.kill_stale is not None and row.get("pgid"):
            killed = worker.kill_stale_group(row["pgid"], run.id, self.kill_stale)
        self.store.set_status(run.id, "preempted", reason="its scheduler stopped")
        self.emit("stale", {"id": run.id, "name": run.name, "killed": killed})
        return True

    def claim(self, run: PlannedRun) -> tuple[Path, str] | None:
        """Write the job's config and mark the run running: (config path, the header of this
        attempt in the run's log.txt), or None when another driver holds the run."""
        config = write_job_config(run, self.run_dirs[run.id])
        if not self.store.claim(run.id, self.owner, self.code_version):
            self.result.busy.append(run.id)
            self.emit("busy", {"id": run.id, "name": run.name, "host": None})
            return None
        attempt = self.launches[run.id] = self.launches.get(run.id, 0) + 1
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        return config, f"--- nettle sweep ({self.backend}): attempt {attempt}, {stamp}"

    def started(self, run: PlannedRun, where: str, pid: int | None = None) -> None:
        """Announce a started job (and record its process group when it is local)."""
        if pid is not None:
            self.store.set_process(run.id, pid, pid)
        info = {"id": run.id, "name": run.name, "slot": where, "attempt": self.launches[run.id]}
        self.emit("start", info | {"pid": pid, "run_dir": str(self.run_dirs[run.id])})

    def record(
        self,
        run: PlannedRun,
        report: dict[str, Any] | None,
        error: str = "",
        stopped: bool = False,
        pruned: str | None = None,
    ) -> bool:
        """Record how a job ended (`report`, or `error` when it returned none); True when it
        should be started again. `pruned`: why the executor stopped it early (a search's
        pruner); a job it stopped before it finished is recorded as pruned."""
        if report is None:
            outcome = Outcome("failed", error or "the job returned no report", retry=True)
            if worker.is_oom(error):
                outcome.reason = "out of memory"
            log_text = error
        else:
            log_text = report.get("log", "")
            outcome = worker.classify_exit(
                report["returncode"], report.get("summary"), log_text, stopped
            )
        tail = "\n".join(log_text.splitlines()[-40:])
        if outcome.status == "done":
            missing = record_outcome(self.store, run, self.run_dirs[run.id])
            if missing:
                outcome = Outcome("failed", missing, retry=True)
        if outcome.status == "done":
            self.result.done.append(run.id)
            seconds = (report or {}).get("seconds", 0.0)
            self.emit("done", {"id": run.id, "name": run.name, "seconds": seconds})
            return False
        if outcome.status == "preempted" and pruned:
            self.store.set_status(run.id, "pruned", reason=pruned, log_tail=tail)
            self.result.pruned.append(run.id)
            self.emit("pruned", {"id": run.id, "name": run.name, "reason": pruned})
            return False
        if outcome.status == "preempted":
            self.preempt(run, outcome.reason or "stopped by the scheduler", tail)
            return False
        return self.fail(run, outcome, tail)

    def fail(self, run: PlannedRun, outcome: Outcome, tail: str = "") -> bool:
        """Record a failure; True when a retry may help and the retries are not spent."""
        reason = outcome.reason or "failed"
        retry = outcome.retry and self.launches.get(run.id, 0) <= self.retries
        self.store.record_failure(run.id, reason, tail)
        if not retry:
            self.result.failed[run.id] = reason
        self.emit("failed", {"id": run.id, "name": run.name, "reason": reason, "retry": retry})
        return retry

    def preempt(
        self, run: PlannedRun, reason: str = "stopped by the scheduler", tail: str | None = None
    ) -> None:
        """Mark a run that was stopped before it ended as preempted."""
        self.store.set_status(run.id, "preempted", reason=reason, log_tail=tail)
        self.result.preempted.append(run.id)
        self.emit("preempted", {"id": run.id, "name": run.name, "reason": reason})

    def finish(self) -> SweepResult:
        """The result of the call, with its duration."""
        self.result.interrupted = self.stop_signal is not None
        self.result.seconds = time.monotonic() - self.t0
        return self.result
