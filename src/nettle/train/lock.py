"""One process per run dir: an advisory lock held while a run trains.

`run_dir_lock(run_dir)` takes an exclusive `flock` on `run_dir/.lock` (created once, never
removed) and writes the holder's pid and host into it. The kernel releases the lock when the
holder dies, however it dies (SIGKILL included), so a stale lock never blocks a rerun. A
second process on the same run dir does not wait: it stops at once with a one-line
`RunDirBusy` naming the holder's pid, and changes nothing.

Example:
    >>> with run_dir_lock(run_dir):  # doctest: +SKIP
    ...     trainer.fit()
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "RunDirBusy", "run_dir_lock"]

LOCK_NAME = ".lock"


class RunDirBusy(ValueError):
    """Another process holds the run dir."""


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold `run_dir`'s lock for the body (a no-op when not `enabled`, e.g. ranks > 0).

    Raises:
        RunDirBusy: another live process holds it (the message names its pid and host).
    """
    if not enabled:
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunDirBusy(
                f"{run_dir} is being trained by {holder}; wait for it to finish (a rerun then "
                "reports the run as done) or choose another -o"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
