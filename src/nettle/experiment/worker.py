"""One job process of a sweep: pin it, start it, stop its group, read how it ended.

A job runs in its own session (so its own process group: `os.killpg` stops it together with
its DataLoader workers and other children) with `CUDA_VISIBLE_DEVICES` set to its slot, a fair
`OMP_NUM_THREADS`, and `NETTLE_RUN_ID` marking every process of the run. Before `exec` the
child asks the kernel for SIGKILL when its parent dies (Linux `PR_SET_PDEATHSIG`), so a
scheduler killed with SIGKILL takes its jobs along; whatever of a group survives (a grandchild)
is found by its marker and killed by the next scheduler (`kill_stale_group`). An optional
`RLIMIT_AS` makes a job that allocates too much fail with MemoryError.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nettle.errors import ExitCode

__all__ = [
    "MARKER",
    "Outcome",
    "Slot",
    "classify_exit",
    "final_metrics",
    "group_alive",
    "group_members",
    "is_oom",
    "kill_stale_group",
    "log_tail",
    "make_slots",
    "process_token",
    "read_epochs",
    "read_summary",
    "reap_group",
    "signal_group",
    "start_job",
    "stop_group",
    "token_alive",
]

MARKER = "NETTLE_RUN_ID"
# a job with stages after training writes {"status": "running"} here before it trains and
# {"status": "done", "metrics": {...}} at its end (see `read_summary`)
_PR_SET_PDEATHSIG = 1
_OOM = re.compile(
    r"MemoryError|OutOfMemoryError|out of memory|Cannot allocate memory|"
    r"can't allocate memory|std::bad_alloc|memory allocation.*failed",
    re.IGNORECASE,
)
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*)?(Error|Exception|Interrupt|Exit)\b.*")


# --- slots and starting -----------------------------------------------------------------


@dataclass
class Slot:
    """Where a job runs: a name and the environment that pins it."""

    name: str
    env: dict[str, str]


def make_slots(gpus: Sequence[str] | None = None, slots: int | None = None) -> list[Slot]:
    """One slot per GPU id (`slots` jobs per GPU) or `slots` CPU slots (default 1).

    Every slot gets `OMP_NUM_THREADS` (and `MKL_NUM_THREADS`) = cores // number of slots.
    """
    per = 1 if slots is None else int(slots)
    if per < 1:
        raise ValueError(f"--slots must be at least 1, got {per}")
    if gpus:
        ids = [str(g).strip() for g in gpus]
        bad = [g for g in ids if not g or "," in g]
        if bad:
            raise ValueError(f"--gpus: {bad[0]!r} is not one GPU id (use 0,1,2)")
        made = [Slot(f"gpu{g}", {"CUDA_VISIBLE_DEVICES": g}) for g in ids for _ in range(per)]
    else:
        made = [Slot(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": ""}) for i in range(per)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = str(max(1, (cores or 1) // len(made)))
    for slot in made:
        slot.env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return made


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(mem_limit_bytes: int | None) -> Callable[[], None]:
    """The `preexec_fn`: memory limit, death signal, and exit if the parent is already gone."""
    parent, prctl = os.getpid(), _prctl()

    def setup() -> None:
        if mem_limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit_bytes, mem_limit_bytes))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the death signal was armed
                os._exit(1)

    return setup


def start_job(
    argv: Sequence[str],
    log: IO[bytes],
    env: dict[str, str],
    mem_limit_gb: float | None = None,
    stdout: int | IO[bytes] | None = None,
) -> subprocess.Popen:
    """Start `argv` in a new session, output to `log` (stdout to `stdout` if given).

    The job gets SIGKILL if this process dies (Linux), and RLIMIT_AS if `mem_limit_gb`. Call
    it from the thread that will outlive the job: the death signal follows the thread.
    """
    limit = int(mem_limit_gb * 2**30) if mem_limit_gb else None
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log if stdout is None else stdout,
        stderr=subprocess.STDOUT if stdout is None else log,
        env=env,
        start_new_session=True,
        preexec_fn=_child_setup(limit),
    )


# --- process groups ---------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    """Whether any process is left in group `pgid` (a zombie leader still counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group `pgid`, from /proc (empty where there is none)."""
    members = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _group_live(pgid: int) -> bool:
    """Whether group `pgid` has a process that is not a zombie (any process, without /proc)."""
    return bool(group_members(pgid)) if os.path.isdir("/proc") else group_alive(pgid)


def _carries(pid: int, run_id: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{MARKER}={run_id}".encode() in environ


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to group `pgid` if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(
    pgid: int, grace: float, proc: subprocess.Popen | None = None, force: Callable[[], bool] = bool
) -> None:
    """SIGTERM the whole group, wait up to `grace` s (or until `force()`), then SIGKILL it."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not force():
        if proc is not None:
            proc.poll()  # reap the leader so that an emptied group reads as gone
        if not _group_live(pgid):
            break
        time.sleep(0.02)
    reap_group(pgid)
    if proc is not None:
        proc.wait()


def reap_group(pgid: int) -> None:
    """SIGKILL whatever is left of a group whose leader has finished."""
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)


def kill_stale_group(pgid: int, run_id: str, grace: float = 5.0) -> int:
    """Kill the processes of group `pgid` that belong to run `run_id`; returns how many.

    Only processes carrying `NETTLE_RUN_ID=run_id` are counted, so a recycled group id of
    someone else's processes is left alone. Without /proc nothing is killed.
    """
    members = [pid for pid in group_members(pgid) if _carries(pid, run_id)]
    if members:
        stop_group(pgid, grace)
    return len(members)


def process_token(pid: int | None = None) -> str:
    """`pid:start-time` of a process, which a recycled pid does not match."""
    pid = os.getpid() if pid is None else pid
    fields = _stat(pid)
    return f"{pid}:{fields[19] if fields else ''}"


def token_alive(token: str) -> bool:
    """Whether the process a `process_token` names is still running."""
    pid_text, _, start = token.partition(":")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    fields = _stat(pid)
    if fields is not None:
        return fields[0] != "Z" and (not start or fields[19] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not os.path.isdir("/proc")


# --- outcomes ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a job ended: status (done/failed/preempted), why, and whether to try again."""

    status: str
    reason: str | None = None
    retry: bool = False


def is_oom(text: str) -> bool:
    """Whether `text` (a log, an error message) reports running out of memory."""
    return bool(_OOM.search(text))


def _last_error(log_text: str) -> str:
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    found = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    return (found or (lines[-1] if lines else "no output"))[:300]


def classify_exit(
    returncode: int, summary: dict[str, Any] | None, log_text: str, stopped: bool = False
) -> Outcome:
    """The outcome of a finished job from its exit status, summary.json and log.

    Bad input (`ExitCode.BAD_INPUT`) and non-finite losses (`ExitCode.NONFINITE`) are not
    retried: they would fail again.
    """
    status = (summary or {}).get("status")
    if returncode == ExitCode.OK and status == "done":
        return Outcome("done")  # it finished before the stop reached it: done, not preempted
    if stopped:
        return Outcome("preempted", "stopped by the scheduler")
    if returncode != ExitCode.OK and is_oom(log_text):
        return Outcome("failed", "out of memory", retry=True)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return Outcome("failed", f"killed by {name}", retry=True)
    if status == "nonfinite" or returncode == ExitCode.NONFINITE:
        detail = (summary or {}).get("error") or _last_error(log_text)
        return Outcome("failed", f"non-finite loss: {detail}")
    if returncode == ExitCode.BAD_INPUT:
        return Outcome("failed", f"bad input: {_last_error(log_text)}")
    if returncode != ExitCode.OK:
        return Outcome("failed", f"exit {returncode}: {_last_error(log_text)}", retry=True)
    return Outcome("failed", f"exit 0 but summary status is {status or 'missing'}", retry=True)


# --- a job's files ----------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's `summary.json` (None if missing or unreadable)."""
    return _read_json(run_dir / "summary.json")


def final_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Top-level values of a summary and those of its final epoch record (not epoch/step)."""
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    return {k: v for k, v in {**final, **summary}.items() if k not in ("epoch", "step")}


def log_tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    """The last `lines` lines (at most 4000 characters) of `path` from byte `offset`."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-4000:]


def read_epochs(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Epoch records of a metrics.jsonl written since byte `offset`, and the new offset.

    A file shorter than `offset` (the trainer truncated it on resume) is read from the start.
    """
    try:
        with open(path, "rb") as f:
            offset = 0 if f.seek(0, 2) < offset else offset
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return [], offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    records = []
    for line in complete.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("kind") == "epoch":
                records.append(record)
    return records, offset + len(complete)
