"""The local scheduler: a sweep's runs as parallel jobs on GPU or CPU slots, resumable.

Each run is one job, `python -m nettle _job RUN_DIR/job.yaml -o RUN_DIR` by default (train,
then the evaluation stages of the run's config: `nettle.experiment.job`), in its own process
group (see `nettle.experiment.worker`), pinned to one slot: a GPU from `gpus`
(`CUDA_VISIBLE_DEVICES`; `slots` jobs per GPU) or a CPU slot (`CUDA_VISIBLE_DEVICES=""`);
every job gets a fair share of the cores as `OMP_NUM_THREADS`.

Layout of `<root>/<sweep>/<run id>/` (the run id is the config hash):

    config.yaml   the resolved config, written here only if absent (the trainer checks it)
    job.yaml      the config of the latest job (execution and evaluation settings may change)
    eval/         the evaluation stages (nettle.experiment.evaluation)
    log.txt       stdout and stderr of every attempt, appended, each after a header line
    ...           the trainer's files: checkpoints/, metrics.jsonl, summary.json, env.json

A run is skipped when its summary.json says done and every evaluation stage of its config is
in the run dir (recorded in the store if the store missed it); runs start in order of
`priority` (higher first), then as planned. Failed, preempted and interrupted runs start again and the trainer resumes them from
their checkpoint; a failure is retried `retries` times in one call unless retrying cannot help
(bad input, non-finite loss). A run already in the store (the same config in another sweep)
keeps its run dir. "running" rows of a scheduler that died are made "preempted" and
any process left of them is killed. SIGINT or SIGTERM stops every job's whole group (TERM,
then KILL after `grace` s; a second signal skips the wait), marks them preempted and returns.

No orphans: a job's leftovers are killed with its group when it ends; the jobs die with a
scheduler killed by SIGKILL (`PR_SET_PDEATHSIG`), and what of their groups survives is killed
by the next call, found by the run id every process of a job carries (`NETTLE_RUN_ID`).

Example:
    >>> result = run_sweep("examples/sweep-digits.yaml", slots=2)  # doctest: +SKIP
    >>> result.ok, len(result.done)  # doctest: +SKIP
    (True, 6)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
from nettle.experiment.spec import PlannedRun, SweepPlan, plan_sweep
from nettle.experiment.store import Store
from nettle.experiment.worker import Outcome, Slot

__all__ = ["SweepResult", "run_sweep"]

log = logging.getLogger(__name__)
Progress = Callable[[str, dict[str, Any]], None]
Command = Callable[[Path, Path], Sequence[str]]


@dataclass
class SweepResult:
    """What one call of `run_sweep` did: run ids by outcome, preflight results, time."""

    sweep: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    preempted: list[str] = field(default_factory=list)
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


@dataclass
class _Job:
    run: PlannedRun
    run_dir: Path
    slot: Slot
    proc: subprocess.Popen
    log: Any
    log_offset: int
    started: float
    metrics_offset: int = 0
    polled: float = 0.0


class _Scheduler:
    """The state of one `run_sweep` call."""

    def __init__(self, plan: SweepPlan, store: Store, root: Path, **opts: Any) -> None:
        self.plan, self.store, self.root = plan, store, root
        self.free: list[Slot] = worker.make_slots(opts["gpus"], opts["slots"])
        self.retries, self.mem_limit_gb = opts["retries"], opts["mem_limit_gb"]
        self.grace, self.poll, self.command = opts["grace"], opts["poll"], opts["command"]
        self.emit: Progress = opts["progress"] or (lambda event, info: None)
        self.result = SweepResult(plan.name)
        self.running: dict[str, _Job] = {}
        self.queue: deque[PlannedRun] = deque()
        self.launches: dict[str, int] = {}
        self.run_dirs: dict[str, Path] = {}
        self.stop_signal: int | None = None
        self.force = False
        self.owner, self.host = worker.process_token(), socket.gethostname()
        self.code_version = code_version()

    def on_signal(self, signum: int, frame: Any) -> None:
        self.force = self.stop_signal is not None
        self.stop_signal = signum

    def _env(self, slot: Slot, run_id: str) -> dict[str, str]:
        return {**os.environ, **slot.env, worker.MARKER: run_id, "NETTLE_SWEEP": self.plan.name}

    # --- before the queue ---------------------------------------------------------------

    def prepare(self) -> list[PlannedRun]:
        """Record the runs, clear stale rows, and return the runs still to do."""
        record_plan(self.store, self.plan, self.root)
        todo = []
        for run in self.plan.runs:
            row = self.store.get(run.id) or {}
            run_dir = Path(row.get("run_dir") or run_dir_of(self.root, self.plan.name, run.id))
            self.run_dirs[run.id] = run_dir
            if row.get("status") == "running" and not self._clear_stale(run, row):
                self.result.busy.append(run.id)
                continue
            if not settle(self.store, run, run_dir, row):
                todo.append(run)
                continue
            self.result.skipped.append(run.id)
            self.emit("skip", {"id": run.id, "name": run.name})
        info = {"sweep": self.plan.name, "total": len(self.plan.runs), "todo": len(todo)}
        self.emit("plan", info | {"slots": [s.name for s in self.free]})
        return todo

    def _clear_stale(self, run: PlannedRun, row: dict[str, Any]) -> bool:
        """Make a dead scheduler's "running" row preempted; False if it may really run."""
        owner = row.get("owner")
        if row.get("host") != self.host or (owner and worker.token_alive(owner)):
            self.emit("busy", {"id": run.id, "name": run.name, "host": row.get("host")})
            return False
        killed = worker.kill_stale_group(row["pgid"], run.id, self.grace) if row["pgid"] else 0
        self.store.set_status(run.id, "preempted", reason="its scheduler stopped")
        self.emit("stale", {"id": run.id, "name": run.name, "killed": killed})
        return True

    def preflight(self, runs: list[PlannedRun]) -> bool:
        """One training step of every run, in one subprocess on the first slot."""
        from nettle.experiment.preflight import run_preflight

        names = {r.id: r.name for r in runs}
        self.result.preflight = run_preflight(
            [(r.id, r.config.model_dump(mode="json")) for r in runs],
            self._env(self.free[0], "preflight"),
            lambda event, info: self.emit(event, info | {"name": names[info["id"]]}),
            stop=lambda: self.stop_signal is not None,
            grace=self.grace,
        )
        for item in self.result.preflight:
            item["name"] = names.get(item["id"], "")
            if not item["ok"]:
                self.store.record_failure(item["id"], f"preflight: {item['error']}")
        return all(p["ok"] for p in self.result.preflight) and self.stop_signal is None

    # --- the queue ----------------------------------------------------------------------

    def loop(self) -> None:
        """Fill free slots, reap finished jobs, until the queue is empty or a signal stops it."""
        while (self.queue or self.running) and self.stop_signal is None:
            while self.queue and self.free and self.stop_signal is None:
                self.launch(self.queue.popleft())
            finished = [j for j in self.running.values() if j.proc.poll() is not None]
            for job in finished:
                self.release(job)
            while self.queue and self.free and self.stop_signal is None:
                self.launch(self.queue.popleft())  # refill the slots before the bookkeeping
            for job in finished:
                self.record(job)
            for job in self.running.values():
                self._watch_metrics(job)
            if not finished:
                time.sleep(self.poll)
        if self.stop_signal is not None:
            self.stop_all()

    def launch(self, run: PlannedRun) -> None:
        """Claim the run in the store and start its job on a free slot."""
        run_dir = self.run_dirs[run.id]
        config = write_job_config(run, run_dir)
        if not self.store.claim(run.id, self.owner, self.code_version):
            self.result.busy.append(run.id)
            self.emit("busy", {"id": run.id, "name": run.name, "host": None})
            return
        slot = self.free.pop(0)
        attempt = self.launches[run.id] = self.launches.get(run.id, 0) + 1
        logf = open(run_dir / "log.txt", "ab")  # noqa: SIM115 (closed when the job ends)
        offset = logf.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = f"--- nettle sweep: attempt {attempt}, {stamp}, {self.host}, {slot.name}\n"
        logf.write(header.encode())
        logf.flush()
        try:
            argv = self.command(config, run_dir)
            proc = worker.start_job(argv, logf, self._env(slot, run.id), self.mem_limit_gb)
        except OSError as exc:
            logf.close()
            self.free.append(slot)
            self._failed(run, Outcome("failed", f"could not start: {exc}"), "")
            return
        self.store.set_process(run.id, proc.pid, proc.pid)
        self.running[run.id] = _Job(run, run_dir, slot, proc, logf, offset, time.monotonic())
        info = {"id": run.id, "name": run.name, "slot": slot.name, "attempt": attempt}
        self.emit("start", info | {"pid": proc.pid, "run_dir": str(run_dir)})

    def release(self, job: _Job) -> None:
        """Free the slot of a job whose leader has exited; kill what is left of its group."""
        worker.reap_group(job.proc.pid)
        job.log.close()
        del self.running[job.run.id]
        self.free.append(job.slot)

    def record(self, job: _Job, stopped: bool = False) -> None:
        """Record how a released job ended; queue it again if a retry may help."""
        summary = worker.read_summary(job.run_dir)
        log_text = worker.log_tail(job.run_dir / "log.txt", job.log_offset, lines=200)
        outcome = worker.classify_exit(job.proc.returncode, summary, log_text, stopped)
        run, tail = job.run, "\n".join(log_text.splitlines()[-40:])
        missing = record_outcome(self.store, run, job.run_dir) if outcome.status == "done" else ""
        if outcome.status == "done" and missing:
            outcome = Outcome("failed", missing, retry=True)
        if outcome.status == "done":
            self.result.done.append(run.id)
            seconds = time.monotonic() - job.started
            self.emit("done", {"id": run.id, "name": run.name, "seconds": seconds})
        elif outcome.status == "preempted":
            self.store.set_status(run.id, "preempted", reason=outcome.reason, log_tail=tail)
            self.result.preempted.append(run.id)
            self.emit("preempted", {"id": run.id, "name": run.name, "reason": outcome.reason})
        else:
            self._failed(run, outcome, tail)

    def _failed(self, run: PlannedRun, outcome: Outcome, tail: str) -> None:
        reason = outcome.reason or "failed"
        retry = outcome.retry and self.launches.get(run.id, 0) <= self.retries
        self.store.record_failure(run.id, reason, tail)
        if retry:
            self.queue.append(run)
        else:
            self.result.failed[run.id] = reason
        self.emit("failed", {"id": run.id, "name": run.name, "reason": reason, "retry": retry})

    def _watch_metrics(self, job: _Job) -> None:
        """Emit "epoch" events from the job's metrics.jsonl, read at most twice a second."""
        now = time.monotonic()
        if now - job.polled >= 0.5:
            job.polled = now
            records, job.metrics_offset = worker.read_epochs(
                job.run_dir / "metrics.jsonl", job.metrics_offset
            )
            for r in records:
                keep = ("epoch", "train_loss", "train_acc", "test_acc")
                self.emit("epoch", {"id": job.run.id} | {k: r.get(k) for k in keep})

    def stop_all(self) -> None:
        """TERM every job's group, KILL after the grace period, mark them preempted."""
        self.result.interrupted = True
        name = signal.Signals(self.stop_signal).name
        self.emit("stopping", {"signal": name, "jobs": len(self.running)})
        for job in self.running.values():
            worker.signal_group(job.proc.pid, signal.SIGTERM)
        for job in list(self.running.values()):
            worker.stop_group(job.proc.pid, self.grace, job.proc, lambda: self.force)
            self.release(job)
            self.record(job, stopped=True)


def run_sweep(
    plan: SweepPlan | str | Path | dict[str, Any],
    store: Store | str | Path | None = None,
    *,
    root: str | Path = "runs",
    gpus: Sequence[str] | None = None,
    slots: int | None = None,
    retries: int = 1,
    mem_limit_gb: float | None = None,
    preflight: bool = False,
    grace: float = 10.0,
    progress: Progress | None = None,
    command: Command | None = None,
    poll: float = 0.01,
    handle_signals: bool = True,
) -> SweepResult:
    """Run a sweep's unfinished runs as parallel jobs (see the module docstring).

    Args:
        plan: a `SweepPlan`, or a sweep file / mapping for `plan_sweep`.
        store: the run store (default `<root>/nettle.db`).
        root: runs go to `<root>/<sweep>/<run id>/`.
        gpus: GPU ids; one job on each at a time (`slots` per GPU if given).
        slots: CPU slots when `gpus` is empty (default 1).
        retries: extra attempts of a failed run within this call.
        mem_limit_gb: virtual-memory limit of each job (RLIMIT_AS): a job that exceeds it
            fails with reason "out of memory". Importing torch alone maps ~3.5 GB, and CUDA
            maps far more, so this suits CPU jobs.
        preflight: first take one training step of every run (one subprocess, first slot)
            and run nothing unless all pass.
        grace: seconds between SIGTERM and SIGKILL when stopping a job.
        progress: callback `(event, info)` with events plan, skip, busy, stale, preflight,
            start, epoch, done, failed, preempted, stopping.
        command: `(config_path, run_dir) -> argv` of a job (default `nettle train`).
        poll: seconds between checks of the running jobs.
        handle_signals: catch SIGINT/SIGTERM (main thread only) to stop the jobs cleanly.

    Returns:
        What was done, skipped, failed (with reasons) or preempted.
    """
    t0 = time.monotonic()
    if not isinstance(plan, SweepPlan):
        plan = plan_sweep(plan)
    if gpus and mem_limit_gb:
        log.warning("--mem-limit-gb limits virtual memory, which CUDA maps by the terabyte")
    root = Path(root)
    store = store if isinstance(store, Store) else Store(store or root / "nettle.db")
    opts = {"gpus": gpus, "slots": slots, "retries": retries, "mem_limit_gb": mem_limit_gb}
    opts |= {"grace": grace, "poll": poll, "command": command or default_command}
    opts["progress"] = progress
    sched = _Scheduler(plan, store, root, **opts)
    handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, sched.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        todo = sched.prepare()
        todo.sort(key=lambda r: -r.config.priority)  # stable: planned order within a priority
        if todo and (not preflight or sched.preflight(todo)):
            sched.queue.extend(todo)
            sched.loop()
        sched.result.interrupted = sched.stop_signal is not None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for job in list(sched.running.values()):  # an exception escaped: leave no job behind
            worker.stop_group(job.proc.pid, 0, job.proc)
            sched.release(job)
            sched.record(job, stopped=True)
    sched.result.seconds = time.monotonic() - t0
    return sched.result
