"""A sweep on Slurm through submitit: one job per unfinished run, requeued on preemption.

Each run becomes a submitit job (submitted together as a job array with `executor.batch()`)
whose function, a `SweepJob`, runs the local scheduler's job, `python -m nettle train CONFIG
-o RUN_DIR --json`, in its own process group (`common.run_job`) and returns a report. A
`SweepJob` is `submitit.helpers.Checkpointable`: when Slurm preempts the job or its time runs
out, submitit calls `checkpoint()`, which stops the trainer's group and requeues the same
`SweepJob`; the trainer then resumes from the checkpoint in the run dir. The driver (this
process, e.g. on the login node) waits for the jobs and is the only writer of the store; it
records the reports with the local scheduler's statuses and reasons, submits a retry for a
failure a retry may help, and on SIGINT/SIGTERM cancels every job and marks the runs
preempted. Run dirs and the submitit folder must be on a filesystem the nodes share.

Jobs outlive a driver that dies (unlike Ray tasks): its "running" rows are then cleared as
stale by the next call on the same host, which submits those runs again, so wait until
`squeue` shows the old jobs gone (or `scancel` them) before running the sweep again.

The same code runs with submitit's local executor (`cluster="local"`), which is how it is
tested here; that executor starts every job at once (it has no queue).

Example:
    >>> run_sweep_slurm("sweep.yaml", partition="gpu", time_min=120)  # doctest: +SKIP
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from nettle.experiment import worker
from nettle.experiment.backends.common import (
    Command,
    Driver,
    Progress,
    default_command,
    job_env,
    missing_extra,
    resolve,
    run_job,
)
from nettle.experiment.driver import SweepResult
from nettle.experiment.spec import PlannedRun, SweepPlan
from nettle.experiment.store import Store

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("submitit", "slurm") from exc

__all__ = ["SweepJob", "run_sweep_slurm"]


class SweepJob(Checkpointable):
    """One run of a sweep as a submitit job: run the trainer, requeue on preemption."""

    def __init__(
        self,
        command: Command,
        config: str,
        run_dir: str,
        run_id: str,
        sweep: str,
        header: str,
        threads: int,
        gpus: bool,
        grace: float = 10.0,
    ) -> None:
        self.command, self.config, self.run_dir, self.run_id = command, config, run_dir, run_id
        self.sweep, self.header, self.threads, self.gpus = sweep, header, threads, gpus
        self.grace, self.requeues = grace, 0
        self._proc: Any = None

    def __call__(self) -> dict[str, Any]:
        argv = self.command(Path(self.config), Path(self.run_dir))
        env = job_env(self.run_id, self.sweep, self.threads, self.gpus)
        header = self.header + (f" (requeued {self.requeues}x)" if self.requeues else "")
        report = run_job(argv, Path(self.run_dir), env, header, self.grace, self._started)
        return report | {"requeues": self.requeues}

    def _started(self, proc: Any) -> None:
        self._proc = proc

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Stop the trainer (it resumes from its own checkpoint) and requeue this run."""
        proc, self._proc = self._proc, None
        if proc is not None:
            worker.stop_group(proc.pid, self.grace, proc)
        self.requeues += 1
        return DelayedSubmission(self, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_proc": None}


def make_executor(
    folder: str | Path,
    *,
    partition: str | None,
    time_min: int,
    gpus_per_node: int,
    cpus_per_task: int,
    mem_gb: float | None,
    cluster: str | None = None,
) -> Any:
    """A submitit `AutoExecutor` (Slurm where `sbatch` exists, else local) for sweep jobs."""
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {
        "timeout_min": time_min,
        "gpus_per_node": gpus_per_node,
        "cpus_per_task": cpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "name": "nettle-sweep",
    }
    if mem_gb:
        params["mem_gb"] = mem_gb
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def run_sweep_slurm(
    plan: SweepPlan | str | Path | dict[str, Any],
    store: Store | str | Path | None = None,
    *,
    root: str | Path = "runs",
    partition: str | None = None,
    time_min: int = 60,
    gpus_per_node: int = 0,
    cpus_per_task: int = 1,
    mem_gb: float | None = None,
    folder: str | Path | None = None,
    executor: Any = None,
    cluster: str | None = None,
    retries: int = 1,
    grace: float = 10.0,
    progress: Progress | None = None,
    command: Command | None = None,
    poll: float = 0.5,
    handle_signals: bool = True,
) -> SweepResult:
    """Run a sweep's unfinished runs as Slurm jobs through submitit (module docstring).

    Args:
        plan: a `SweepPlan`, or a sweep file / mapping for `plan_sweep`.
        store: the run store (default `<root>/nettle.db`), written by this process only.
        root: runs go to `<root>/<sweep>/<run id>/`, on a filesystem every node shares.
        partition, time_min, gpus_per_node, cpus_per_task, mem_gb: the job's resources
            (`cpus_per_task` is also its `OMP_NUM_THREADS`).
        folder: submitit's logs and pickles (default `<root>/<sweep>/.submitit/%j`).
        executor: a configured submitit executor to use instead of `make_executor`'s.
        cluster: force submitit's executor ("slurm", "local", "debug"); None: auto.
        retries: extra attempts of a failed run within this call.
        grace: seconds between SIGTERM and SIGKILL when a job stops its trainer.
        progress: callback `(event, info)` with the local scheduler's events.
        command: `(config_path, run_dir) -> argv` of a job, evaluated on the node.
        poll: seconds between checks of the jobs.
        handle_signals: catch SIGINT/SIGTERM (main thread only) to cancel the jobs.
    """
    root = Path(root)
    plan, store = resolve(plan, store, root)
    if executor is None:
        executor = make_executor(
            folder or root / plan.name / ".submitit" / "%j",
            partition=partition,
            time_min=time_min,
            gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task,
            mem_gb=mem_gb,
            cluster=cluster,
        )
    driver = Driver(plan, store, root, retries, progress, "slurm")
    handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, driver.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    shape = (command or default_command, cpus_per_task, gpus_per_node > 0, grace)
    try:
        todo = driver.prepare()
        if todo and driver.stop_signal is None:
            _drive(driver, executor, todo, shape, poll)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return driver.finish()


def _drive(
    driver: Driver, executor: Any, todo: list[PlannedRun], shape: tuple, poll: float
) -> None:
    """Submit the runs as one array, record each result, resubmit retries, cancel on a signal."""
    command, threads, gpus, grace = shape
    jobs: dict[str, tuple[Any, PlannedRun]] = {}

    def submit(runs: list[PlannedRun]) -> None:
        made = []
        for run in runs:
            claimed = driver.claim(run)
            if claimed is not None:
                config, header = claimed
                run_dir = str(driver.run_dirs[run.id])
                fn = SweepJob(
                    command, str(config), run_dir, run.id, driver.plan.name, header, threads, gpus
                )
                fn.grace = grace
                made.append((run, fn))
        with executor.batch():
            submitted = [(run, executor.submit(fn)) for run, fn in made]
        for run, job in submitted:
            jobs[run.id] = (job, run)
            driver.started(run, f"slurm job {job.job_id}")

    submit(todo)
    try:
        while jobs and driver.stop_signal is None:
            finished = [(job, run) for job, run in jobs.values() if job.done()]
            again = []
            for job, run in finished:
                del jobs[run.id]
                report, error = _result(job)
                if driver.record(run, report, error) and driver.stop_signal is None:
                    again.append(run)
            if again:
                submit(again)
            if not finished:
                time.sleep(poll)
    finally:
        if jobs:
            _cancel(driver, list(jobs.values()), grace)


def _result(job: Any) -> tuple[dict[str, Any] | None, str]:
    """A finished job's report, or None and why it has none."""
    try:
        return job.result(), ""
    except Exception as exc:  # submitit's FailedJobError, UncompletedJobError, ...
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


def _cancel(driver: Driver, jobs: list[tuple[Any, PlannedRun]], grace: float) -> None:
    """Cancel every job, wait for them to end, and mark their runs preempted."""
    for job, _ in jobs:
        job.cancel(check=False)
    deadline = time.monotonic() + grace + 5
    while time.monotonic() < deadline and not all(job.done() for job, _ in jobs):
        time.sleep(0.1)
    for _, run in jobs:
        driver.preempt(run)
