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

A `RunSource` (a search) proposes runs while the sweep runs: whenever a slot is free and the
queue is empty the scheduler asks it for the next run, hands it every epoch record of its
running jobs (a reason it returns stops that job's group, TERM then KILL after `grace` s, and
the run is recorded as pruned) and tells it when a run has ended for this call.

Example:
    >>> result = run_sweep("examples/sweep-digits.yaml", slots=2)  # doctest: +SKIP
    >>> result.ok, len(result.done)  # doctest: +SKIP
    (True, 6)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nettle.experiment import worker
from nettle.experiment.driver import Driver, SweepResult
from nettle.experiment.record import default_command
from nettle.experiment.spec import PlannedRun, SweepPlan, plan_sweep
from nettle.experiment.store import Store
from nettle.experiment.worker import Outcome, Slot

__all__ = ["RunSource", "SweepResult", "run_sweep"]

log = logging.getLogger(__name__)
Progress = Callable[[str, dict[str, Any]], None]
Command = Callable[[Path, Path], Sequence[str]]


class RunSource(Protocol):
    """Runs proposed while a sweep runs (see the module docstring)."""

    def next_run(self) -> PlannedRun | None:
        """The next run to start on a free slot; None when it has no more."""

    def watch(self, run: PlannedRun, record: dict[str, Any]) -> str | None:
        """Why to stop a running job early, from one epoch record of its metrics.jsonl."""

    def ended(self, run: PlannedRun) -> None:
        """The run will not start again in this call (its status is in the store)."""


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
    pruned: str | None = None
    kill_at: float | None = None


class _Scheduler:
    """The local executor of one `run_sweep` call: slots, processes, the queue; the
    bookkeeping is its `Driver`'s."""

    def __init__(self, plan: SweepPlan, store: Store, root: Path, **opts: Any) -> None:
        self.plan = plan
        self.free: list[Slot] = worker.make_slots(opts["gpus"], opts["slots"])
        self.mem_limit_gb = opts["mem_limit_gb"]
        self.grace, self.poll, self.command = opts["grace"], opts["poll"], opts["command"]
        self.driver = Driver(
            plan, store, root, opts["retries"], opts["progress"], "local", kill_stale=self.grace
        )
        self.emit, self.result = self.driver.emit, self.driver.result
        self.running: dict[str, _Job] = {}
        self.queue: deque[PlannedRun] = deque()
        self.source: RunSource | None = opts.get("source")
        self.stop_event: threading.Event | None = opts.get("stop")
        self.more = self.source is not None  # the source may propose more runs

    @property
    def stop_signal(self) -> int | None:
        """The signal that stops the sweep; a set `stop` event counts as SIGTERM."""
        stop = self.stop_event
        if stop is not None and stop.is_set() and self.driver.stop_signal is None:
            self.driver.on_signal(signal.SIGTERM, None)
        return self.driver.stop_signal

    def _env(self, slot: Slot, run_id: str) -> dict[str, str]:
        return {**os.environ, **slot.env, worker.MARKER: run_id, "NETTLE_SWEEP": self.plan.name}

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
                self.driver.store.record_failure(item["id"], f"preflight: {item['error']}")
        return all(p["ok"] for p in self.result.preflight) and self.stop_signal is None

    # --- the queue ----------------------------------------------------------------------

    def loop(self) -> None:
        """Fill free slots, reap finished jobs, until the queue is empty or a signal stops it.

        A slot that frees is refilled before any bookkeeping, also while the finished jobs
        are recorded one by one (a search tells its study and asks for the next trial)."""
        while (self.queue or self.running or self.more) and self.stop_signal is None:
            self.fill()
            finished = self.reap()
            reaped = bool(finished)
            while finished:
                self.fill()
                job = finished.pop(0)
                self.record(job, stopped=job.pruned is not None)
                finished += self.reap()
            for job in self.running.values():
                self._watch_metrics(job)
            if not reaped:
                time.sleep(self.poll)
        if self.stop_signal is not None:
            self.stop_all()

    def reap(self) -> list[_Job]:
        """Release the jobs whose leader has exited; they still need recording."""
        finished = [j for j in self.running.values() if j.proc.poll() is not None]
        for job in finished:
            self.release(job)
        return finished

    def fill(self) -> None:
        """Start queued runs, then runs of the source, while slots are free."""
        while self.free and self.stop_signal is None:
            if self.queue:
                self.launch(self.queue.popleft())
                continue
            if not self.more:
                return
            run = self.source.next_run()
            if run is None:
                self.more = False
            elif self.driver.add(run):
                self.launch(run)
            else:  # finished already, or running elsewhere
                self.source.ended(run)

    def _ended(self, run: PlannedRun) -> None:
        if self.source is not None:
            self.source.ended(run)

    def launch(self, run: PlannedRun) -> None:
        """Claim the run in the store and start its job on a free slot."""
        claimed = self.driver.claim(run)
        if claimed is None:
            return
        config, header = claimed
        run_dir, slot = self.driver.run_dirs[run.id], self.free.pop(0)
        logf = open(run_dir / "log.txt", "ab")  # noqa: SIM115 (closed when the job ends)
        offset = logf.tell()
        logf.write(f"{header}, {self.driver.host}, {slot.name}\n".encode())
        logf.flush()
        try:
            argv = self.command(config, run_dir)
            proc = worker.start_job(argv, logf, self._env(slot, run.id), self.mem_limit_gb)
        except OSError as exc:
            logf.close()
            self.free.append(slot)
            if self.driver.fail(run, Outcome("failed", f"could not start: {exc}")):
                self.queue.append(run)
            else:
                self._ended(run)
            return
        self.running[run.id] = _Job(run, run_dir, slot, proc, logf, offset, time.monotonic())
        self.driver.started(run, slot.name, proc.pid)

    def release(self, job: _Job) -> None:
        """Free the slot of a job whose leader has exited; kill what is left of its group."""
        worker.reap_group(job.proc.pid)
        job.log.close()
        del self.running[job.run.id]
        self.free.append(job.slot)

    def record(self, job: _Job, stopped: bool = False) -> None:
        """Hand a released job's report to the driver; queue it again if a retry may help."""
        report = {
            "returncode": job.proc.returncode,
            "summary": worker.read_summary(job.run_dir),
            "log": worker.log_tail(job.run_dir / "log.txt", job.log_offset, lines=200),
            "seconds": time.monotonic() - job.started,
        }
        if self.driver.record(job.run, report, stopped=stopped, pruned=job.pruned):
            self.queue.append(job.run)
        else:
            self._ended(job.run)

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
                if self.source is not None and job.pruned is None:
                    job.pruned = self.source.watch(job.run, r)
                    if job.pruned is not None:  # stop its group; KILL after the grace
                        worker.signal_group(job.proc.pid, signal.SIGTERM)
                        job.kill_at = now + self.grace
        if job.kill_at is not None and now >= job.kill_at:
            worker.signal_group(job.proc.pid, signal.SIGKILL)
            job.kill_at = None

    def stop_all(self) -> None:
        """TERM every job's group, KILL after the grace period, mark them preempted."""
        self.result.interrupted = True
        name = signal.Signals(self.stop_signal).name
        self.emit("stopping", {"signal": name, "jobs": len(self.running)})
        for job in self.running.values():
            worker.signal_group(job.proc.pid, signal.SIGTERM)
        for job in list(self.running.values()):
            worker.stop_group(job.proc.pid, self.grace, job.proc, lambda: self.driver.force)
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
    source: RunSource | None = None,
    stop: threading.Event | None = None,
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
            start, epoch, done, failed, preempted, pruned, stopping.
        command: `(config_path, run_dir) -> argv` of a job (default `nettle train`).
        poll: seconds between checks of the running jobs.
        handle_signals: catch SIGINT/SIGTERM (main thread only) to stop the jobs cleanly.
        source: proposes more runs while the sweep runs and may stop them early (a search);
            `plan` may then be empty.
        stop: an event another thread sets to stop the sweep as SIGTERM would (signal
            handlers belong to the main thread).

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
    opts["progress"], opts["source"], opts["stop"] = progress, source, stop
    sched = _Scheduler(plan, store, root, **opts)
    handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        on_signal = sched.driver.on_signal
        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        todo = sched.driver.prepare([s.name for s in sched.free])
        if (todo or source) and (not preflight or sched.preflight(todo)):
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
