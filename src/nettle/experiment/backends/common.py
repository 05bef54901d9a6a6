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
from nettle.experiment.driver import Driver
from nettle.experiment.record import default_command
from nettle.experiment.spec import SweepPlan
from nettle.experiment.store import Store

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


def resolve(
    plan: SweepPlan | str | Path | dict[str, Any], store: Store | str | Path | None, root: Path
) -> tuple[SweepPlan, Store]:
    """A `SweepPlan` and a `Store` from what the public functions accept."""
    from nettle.experiment.spec import plan_sweep

    if not isinstance(plan, SweepPlan):
        plan = plan_sweep(plan)
    store = store if isinstance(store, Store) else Store(store or root / "nettle.db")
    return plan, store
