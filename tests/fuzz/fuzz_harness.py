"""Run one hostile input through the `nettle` command line and judge how it was refused.

A `Case` writes its files into an empty work folder and returns the command line; `run_case`
snapshots every file of that folder, runs the command there (in this process through
`nettle.cli.main`, or as a real `python -m nettle` process), and `problems` lists what broke
the promise made to users about bad input: exit status 2, one line on stderr naming the
option, field or file, no traceback, every file that was there byte-identical and nothing
half-made left behind.

Shared by the fuzz tests (tests/fuzz/) and `bench/fuzz_report.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nettle.errors import ExitCode

__all__ = [
    "REFUSED",
    "Case",
    "Fixtures",
    "Outcome",
    "build_fixtures",
    "problems",
    "run_case",
    "work_folder",
]

REFUSED = int(ExitCode.BAD_INPUT)
REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT = 300
NOBODY = 65534
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
"""What a Python process does not show by default."""

TINY_CONFIG = """\
name: tiny
model: {name: simple-cnn, kwargs: {width: 4}}
data: {name: digits, batch_size: 64}
train: {epochs: 1, device: cpu, tensorboard: false, seed: 0}
"""
"""A valid config that trains in about a second on the built-in digits."""

TINY_SWEEP = """\
name: tinysweep
base:
  model: {name: simple-cnn, kwargs: {width: 4}}
  data: {name: digits}
  train: {epochs: 1, device: cpu, tensorboard: false}
grid:
  train.seed: [0, 1]
"""

TINY_SEARCH = """\
name: tinysearch
base:
  model: {name: simple-cnn, kwargs: {width: 4}}
  data: {name: digits}
  train: {epochs: 1, device: cpu, tensorboard: false}
search:
  metric: test_acc
  direction: maximize
  space:
    train.optim.lr: {low: 1.0e-3, high: 0.5, log: true}
"""


@dataclass(frozen=True)
class Fixtures:
    """Valid inputs built once, copied into a case's work folder before it mutates them.

    Attributes:
        root: the folder of `runs/` (a trained run recorded in `runs/nettle.db`).
        run_dir: `root/runs/tiny/run`, a trained `simple-cnn` (width 4, 1 epoch, digits).
    """

    root: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "tiny" / "run"

    @property
    def store(self) -> Path:
        return self.root / "runs" / "nettle.db"

    def copy_runs(self, work: Path) -> Path:
        """A copy of `runs/` (the run dir and its store) in `work`; returns `work/runs`."""
        shutil.copytree(self.root / "runs", work / "runs", symlinks=True)
        return work / "runs"


def build_fixtures(folder: Path) -> Fixtures:
    """Train the tiny run through `nettle train` (so it is recorded in the store)."""
    from nettle.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    with _inside(folder), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "tiny.yaml", "-o", "runs/tiny/run", "--json"])
    if code != 0:
        raise RuntimeError(f"the fixture run did not train (exit {code})")
    return Fixtures(folder)


Make = Callable[[Path, Fixtures], list[str]]
"""Writes a case's files into the work folder (the current folder) and returns its argv."""


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes:
        group: the verb or loader it exercises (a column of the bench's report).
        name: what is hostile about it (the test id).
        make: writes the files into the work folder and returns the command line.
        names: what the error line must mention (an option, a field, a file name).
        codes: the accepted exit statuses (2: refused; (0, 2): accepted or refused cleanly).
        new_files: whether a refusal may create files (default: nothing new at all).
        absent: with `new_files`, the paths (relative) a refusal must still not create.
        readonly: a folder (relative) made read-only; as root the case runs as `nobody`.
        env: environment variables set while it runs.
        subprocess: run as a real `python -m nettle` process instead of in-process.
        timeout: seconds a real process may take (then it counts as exit 124, timed out).
        slow: too slow for the default test run.
        xfail: a known defect (the reason), kept as a strict expected failure.
    """

    group: str
    name: str
    make: Make
    names: tuple[str, ...] = ()
    codes: tuple[int, ...] = (REFUSED,)
    new_files: bool = False
    absent: tuple[str, ...] = ()
    readonly: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    subprocess: bool = False
    timeout: float = SUBPROCESS_TIMEOUT
    slow: bool = False
    xfail: str | None = None

    @property
    def id(self) -> str:
        return f"{self.group}: {self.name}"


@dataclass
class Outcome:
    """What running a case did."""

    argv: list[str]
    code: int
    stderr: str
    changed: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr


def problems(case: Case, out: Outcome) -> list[str]:
    """How `out` breaks the promise for `case`; empty if it kept it."""
    found = []
    if out.code not in case.codes:
        found.append(f"exit {out.code}, expected {' or '.join(map(str, case.codes))}")
    if out.traceback:
        found.append("a traceback")
    if out.code != 0:
        if out.changed:
            found.append(f"files changed: {', '.join(out.changed[:5])}")
        left = [p for p in out.created if case.new_files is False or p in case.absent]
        if left:
            found.append(f"left behind: {', '.join(left[:5])}")
        if not out.traceback:
            found += _line_problems(case, out.lines)
    return found


def _line_problems(case: Case, lines: list[str]) -> list[str]:
    """One line that names each of `case.names` (`a|b`: either)."""
    if len(lines) != 1:
        return [f"{len(lines)} lines on stderr"]
    line = lines[0].lower()
    missing = [n for n in case.names if not any(a.lower() in line for a in n.split("|"))]
    return [f"the line does not name {' and '.join(missing)}"] if missing else []


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (folders as 'dir'), by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def work_folder(parent: Path | None = None) -> Iterator[Path]:
    """An empty folder for one case, removed afterwards (read-only parts made writable)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-", dir=parent))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def run_case(case: Case, fixtures: Fixtures, work: Path) -> Outcome:
    """Write the case's files into `work`, run its command there and compare the files."""
    with _inside(work):
        argv = case.make(work, fixtures)
    if case.readonly:
        _make_read_only(work, work / case.readonly)
    before = snapshot(work)
    start = time.perf_counter()
    with _environment(dict(case.env)), _as_nobody(bool(case.readonly)):
        if case.subprocess:
            code, err = _in_a_process(argv, work, case.timeout)
        else:
            code, err = _in_this_process(argv, work)
    seconds = time.perf_counter() - start
    after = snapshot(work)
    changed = [p for p, h in before.items() if after.get(p) != h]
    created = [p for p in after if p not in before]
    return Outcome(argv, code, err, changed, created, seconds)


def _make_read_only(work: Path, folder: Path) -> None:
    """Everything in `work` writable by anyone but `folder` and what it holds."""
    for path in [work, *work.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() else 0o666)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


@contextlib.contextmanager
def _as_nobody(wanted: bool) -> Iterator[None]:
    """As root, run as user `nobody` (root may write into read-only folders); the saved user
    id stays root's, so that root comes back afterwards."""
    if not wanted or os.geteuid() != 0:
        yield
        return
    os.setresgid(NOBODY, NOBODY, 0)
    os.setresuid(NOBODY, NOBODY, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """Let `main`'s `logging.basicConfig` attach to the current stderr, as in a new process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = handlers, level


def _in_this_process(argv: list[str], work: Path) -> tuple[int, str]:
    """Run `nettle.cli.main(argv)` in `work`; stderr as a process would show it."""
    from nettle.cli import main

    err = io.StringIO()
    with (
        _inside(work),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(err),
        _fresh_logging(),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse, or a verb that exits
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=err)
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc(file=err)
            code = 1
    shown = {
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, HIDDEN_WARNINGS)
    }
    return int(code), err.getvalue() + "".join(f"{line}\n" for line in sorted(shown))


def _in_a_process(argv: list[str], work: Path, timeout: float) -> tuple[int, str]:
    env = dict(os.environ, MPLCONFIGDIR=str(work.parent / f"{work.name}-mpl"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nettle", *argv],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return 124, f"(still running after {timeout:g} s; stopped)\n"
    finally:
        shutil.rmtree(env["MPLCONFIGDIR"], ignore_errors=True)
    return proc.returncode, proc.stderr
