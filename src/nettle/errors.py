"""Exit statuses of the command line and of the jobs that sweeps run.

One enum, so that the CLI, the sweep jobs and the schedulers that classify a job's exit agree
on what each number means.
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """How a `nettle` command (or a sweep job) ended."""

    OK = 0
    """Done."""
    FAILED = 1
    """An unexpected error (a bug): the traceback is shown."""
    BAD_INPUT = 2
    """A problem with what the user gave (a config, a file, an option): one line, no retry."""
    NONFINITE = 3
    """Training stopped on a non-finite loss; the state was saved for debugging."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT)."""
