"""Wall-clock timing: a lap `Stopwatch` and a `PhaseTimer` for named phases of a step.

Both use `time.perf_counter`. `PhaseTimer` synchronises the CUDA device (when given one)
before reading the clock, so asynchronous kernels are charged to the phase that launched them
(the price: one synchronisation at each phase boundary, which keeps the device from running
ahead of the host across phases), and records each phase's peak of allocated CUDA memory.
`bench/gpu_check.py` checks both on a GPU.

Example:
    >>> sw = Stopwatch()
    >>> sw.start()
    >>> lap = sw.lap()
    >>> sw.stop()
    >>> len(sw.lap_times())
    1
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch

__all__ = ["PhaseStats", "PhaseTimer", "Stopwatch", "format_phases"]


class Stopwatch:
    """A stopwatch whose laps count only running time.

    A lap is the running time since the previous `lap()` (or since `start()`): in
    `start, lap, stop, start, lap` the second lap adds the time before the stop and the time
    after the restart. Calls at the wrong time (lap or stop before start, lap while stopped,
    start while running) do nothing and raise nothing.
    """

    def __init__(self) -> None:
        self._running = False
        self._since: float = 0.0  # perf_counter at the last start
        self._accum: float = 0.0  # running time of the current lap before the last start
        self._laps: list[float] = []
        self._total: float = 0.0  # running time of all completed segments

    @property
    def running(self) -> bool:
        """Whether the stopwatch is running."""
        return self._running

    def start(self) -> None:
        """Start (or restart after `stop`); does nothing while running."""
        if self._running:
            return
        self._running = True
        self._since = time.perf_counter()

    def stop(self) -> None:
        """Stop; the current lap keeps its running time. Does nothing unless running."""
        if not self._running:
            return
        segment = time.perf_counter() - self._since
        self._accum += segment
        self._total += segment
        self._running = False

    def lap(self) -> float | None:
        """Close the current lap and return its running time; `None` unless running."""
        if not self._running:
            return None
        now = time.perf_counter()
        segment = now - self._since
        lap = self._accum + segment
        self._total += segment
        self._since = now
        self._accum = 0.0
        self._laps.append(lap)
        return lap

    def lap_times(self) -> list[float]:
        """Durations of the completed laps, in seconds, oldest first."""
        return list(self._laps)

    def elapsed(self) -> float:
        """Total running time since the first start, in seconds."""
        if self._running:
            return self._total + (time.perf_counter() - self._since)
        return self._total


@dataclass
class PhaseStats:
    """Durations of one named phase (seconds)."""

    name: str
    times: list[float] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.times)

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else 0.0


class PhaseTimer:
    """Times named phases (`data`, `forward`, ...) of repeated steps.

    Args:
        device: when a CUDA device, `torch.cuda.synchronize` runs before each clock read so
            that queued kernels are charged to the phase that launched them, and each phase's
            peak allocated memory is recorded (`peak_memory()`).
        enabled: a disabled timer costs one attribute check per phase.

    Example:
        >>> timer = PhaseTimer()
        >>> with timer.phase("forward"):
        ...     _ = sum(range(10))
        >>> timer.stats()["forward"].count
        1
    """

    def __init__(self, device: torch.device | str | None = None, enabled: bool = True) -> None:
        dev = torch.device(device) if device is not None else None
        self._sync = dev is not None and dev.type == "cuda" and torch.cuda.is_available()
        self._device = dev
        self.enabled = enabled
        self._phases: dict[str, PhaseStats] = {}
        self._peaks: dict[str, int] = {}

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Context manager that adds the time spent inside it to phase `name`.

        A small object with `__enter__`/`__exit__` rather than a generator: the trainer opens
        four or more phases a step, and this keeps each to about a microsecond on the CPU.
        """
        return _Phase(self, name) if self.enabled else _NO_PHASE

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Record nothing inside (e.g. the phases of a step timed as a whole elsewhere)."""
        enabled, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = enabled

    def add(self, name: str, seconds: float) -> None:
        """Record `seconds` for phase `name` (for time measured elsewhere)."""
        stats = self._phases.get(name)
        if stats is None:
            stats = self._phases[name] = PhaseStats(name)
        stats.times.append(seconds)

    def stats(self) -> dict[str, PhaseStats]:
        """Phase name -> its durations, in first-seen order."""
        return dict(self._phases)

    def peak_memory(self) -> dict[str, int]:
        """Phase name -> peak bytes allocated on the CUDA device during it (empty on CPU).

        On the CPU per-phase peaks are not measured (use `nettle.measure.memory.MemoryMeter`
        around a whole stage instead).
        """
        return dict(self._peaks)

    def totals(self) -> dict[str, float]:
        """Phase name -> total seconds."""
        return {name: s.total for name, s in self._phases.items()}

    def fractions(self) -> dict[str, float]:
        """Phase name -> share of the summed time of all phases (0..1)."""
        totals = self.totals()
        whole = sum(totals.values())
        return {k: (v / whole if whole > 0 else 0.0) for k, v in totals.items()}

    def reset(self) -> None:
        """Forget every recorded duration and peak."""
        self._phases.clear()
        self._peaks.clear()


class _Phase:
    """One timed entry into a phase of a `PhaseTimer`."""

    __slots__ = ("_name", "_start", "_timer")

    def __init__(self, timer: PhaseTimer, name: str) -> None:
        self._timer, self._name, self._start = timer, name, 0.0

    def __enter__(self) -> None:
        timer = self._timer
        if timer._sync:
            torch.cuda.reset_peak_memory_stats(timer._device)
            torch.cuda.synchronize(timer._device)
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        timer, name = self._timer, self._name
        if timer._sync:
            torch.cuda.synchronize(timer._device)
        timer.add(name, time.perf_counter() - self._start)
        if timer._sync:
            peak = torch.cuda.max_memory_allocated(timer._device)
            timer._peaks[name] = max(timer._peaks.get(name, 0), peak)


_NO_PHASE = contextlib.nullcontext()


def format_phases(timer: PhaseTimer) -> str:
    """A plain-text breakdown table: phase, total seconds, share, calls, median ms."""
    lines = [f"{'phase':<10} {'total s':>9} {'share':>7} {'calls':>7} {'median ms':>10}"]
    fractions = timer.fractions()
    for name, s in timer.stats().items():
        lines.append(
            f"{name:<10} {s.total:>9.3f} {fractions[name]:>7.1%} {s.count:>7d} "
            f"{s.median * 1e3:>10.3f}"
        )
    return "\n".join(lines)
