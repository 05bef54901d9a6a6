"""A sweep on a Ray cluster: one Ray task per unfinished run.

Each task asks for `num_cpus_per_run` CPUs and `num_gpus_per_run` GPUs (Ray pins the GPUs
with `CUDA_VISIBLE_DEVICES`; a task without GPUs gets `CUDA_VISIBLE_DEVICES=""`) and runs
the job of the local scheduler, `python -m nettle train CONFIG -o RUN_DIR --json`, in its own
process group (`common.run_job`), with `OMP_NUM_THREADS` = its CPUs. The task returns a report
and the driver, the only writer of the store, records it with the local scheduler's statuses
and reasons. Run dirs must be on a filesystem that the driver and every node share.

Retries are the driver's own: a task is submitted with `max_retries=0`, and a failure that
a retry may help (out of memory, a signal, a crash; also a dead worker or Ray's host-memory
monitor killing the task) is submitted again, `retries` times at most, and resumes from its
checkpoint. Done runs are skipped and interrupted ones resumed, as locally.

SIGINT/SIGTERM cancels every task: first `ray.cancel(force=False)`, which raises
KeyboardInterrupt in the task so that it stops its job's whole group (SIGTERM, SIGKILL after
`grace` s), then, for a task still running `grace` + 5 s later, `ray.cancel(force=True)`,
which kills the worker (the job's leader dies with it, `PR_SET_PDEATHSIG`, but its children
may not); the runs are marked preempted.

Example:
    >>> result = run_sweep_ray("examples/sweep-digits.yaml", address="auto")  # doctest: +SKIP
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

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
    import ray
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("ray", "ray") from exc

__all__ = ["run_sweep_ray"]

_MARGIN = 5.0  # s a cancelled task gets beyond `grace` to stop its job before it is killed


def _task(
    command: Command,
    config: str,
    run_dir: str,
    run_id: str,
    sweep: str,
    header: str,
    threads: int,
    gpus: bool,
    grace: float,
) -> dict[str, Any]:
    """The body of one Ray task: run the job on this node and return its report."""
    argv = command(Path(config), Path(run_dir))
    return run_job(argv, Path(run_dir), job_env(run_id, sweep, threads, gpus), header, grace)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return f"out of memory: {type(exc).__name__} (Ray's memory monitor)"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"[:300]


def run_sweep_ray(
    plan: SweepPlan | str | Path | dict[str, Any],
    store: Store | str | Path | None = None,
    *,
    root: str | Path = "runs",
    address: str | None = None,
    num_gpus_per_run: float = 0,
    num_cpus_per_run: float = 1,
    retries: int = 1,
    grace: float = 10.0,
    progress: Progress | None = None,
    command: Command | None = None,
    handle_signals: bool = True,
    init_kwargs: dict[str, Any] | None = None,
) -> SweepResult:
    """Run a sweep's unfinished runs as Ray tasks (see the module docstring).

    Args:
        plan: a `SweepPlan`, or a sweep file / mapping for `plan_sweep`.
        store: the run store (default `<root>/nettle.db`), written by this process only.
        root: runs go to `<root>/<sweep>/<run id>/`, on a filesystem every node shares.
        address: the Ray cluster (`"auto"`, `"ray://host:10001"`); None uses the Ray already
            initialised in this process or starts a local one (shut down at the end).
        num_gpus_per_run: GPUs of each task (fractions share a GPU without isolation).
        num_cpus_per_run: CPUs of each task; also its `OMP_NUM_THREADS`.
        retries: extra attempts of a failed run within this call.
        grace: seconds between the polite and the forced cancellation of a task.
        progress: callback `(event, info)` with the local scheduler's events.
        command: `(config_path, run_dir) -> argv` of a job, evaluated on the worker.
        handle_signals: catch SIGINT/SIGTERM (main thread only) to cancel the tasks.
        init_kwargs: more arguments of `ray.init` (e.g. `num_cpus` of a local Ray).

    Returns:
        What was done, skipped, failed (with reasons) or preempted.
    """
    if num_cpus_per_run <= 0 or num_gpus_per_run < 0:
        raise ValueError(
            f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got "
            f"{num_cpus_per_run} and {num_gpus_per_run}"
        )
    root = Path(root)
    plan, store = resolve(plan, store, root)
    driver = Driver(plan, store, root, retries, progress, "ray")
    handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, driver.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = False
    try:
        todo = driver.prepare()
        if todo and driver.stop_signal is None:
            if not ray.is_initialized():
                kwargs = {"include_dashboard": False, "log_to_driver": False}
                ray.init(address=address, **kwargs | (init_kwargs or {}))
                started = True
            opts = {"num_cpus": num_cpus_per_run, "num_gpus": num_gpus_per_run}
            remote = ray.remote(_task).options(max_retries=0, **opts)
            job = (command or default_command, int(num_cpus_per_run), num_gpus_per_run > 0)
            _drive(driver, todo, remote, job, grace)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if started:
            ray.shutdown()
    return driver.finish()


def _drive(
    driver: Driver,
    todo: list[PlannedRun],
    remote: Any,
    job: tuple[Command, int, bool],
    grace: float,
) -> None:
    """Submit the runs, record each report as it comes, resubmit retries, cancel on a signal."""
    pending: dict[Any, PlannedRun] = {}
    command, threads, gpus = job

    def submit(run: PlannedRun) -> None:
        claimed = driver.claim(run)
        if claimed is not None:
            config, header = claimed
            run_dir = str(driver.run_dirs[run.id])
            args = (command, str(config), run_dir, run.id, driver.plan.name, header)
            pending[remote.remote(*args, threads, gpus, grace)] = run
            driver.started(run, "ray")

    for run in todo:
        submit(run)
    try:
        while pending and driver.stop_signal is None:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    report, error = ray.get(ref), ""
                except ray.exceptions.RayError as exc:
                    report, error = None, _error_text(exc)
                if driver.record(run, report, error) and driver.stop_signal is None:
                    submit(run)
    finally:
        if pending:
            _cancel(driver, pending, grace)


def _cancel(driver: Driver, pending: dict[Any, PlannedRun], grace: float) -> None:
    """Cancel every pending task (politely, then by force) and mark its run preempted."""
    for ref in pending:
        ray.cancel(ref, force=False)
    deadline = time.monotonic() + grace + _MARGIN  # the task's own grace, then some
    left = list(pending)
    while left and time.monotonic() < deadline:
        _, left = ray.wait(left, num_returns=len(left), timeout=0.1)
    for ref in left:
        ray.cancel(ref, force=True)
    if left:
        ray.wait(left, num_returns=len(left), timeout=grace)
    for ref, run in pending.items():
        try:
            report = ray.get(ref, timeout=0)
        except (ray.exceptions.RayError, TimeoutError):
            driver.preempt(run)
            continue
        if driver.record(run, report):  # it ended before the cancellation reached it
            driver.preempt(run)  # and would be retried: the next call does that
