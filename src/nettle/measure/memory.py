"""Peak memory of a phase: the CUDA allocator's peak, or on the CPU the resident set.

`MemoryMeter(device)` is a context manager; after it, `peak_bytes` is the peak above the level
at entry. On CUDA it uses `torch.cuda.reset_peak_memory_stats` and `max_memory_allocated`
(exact, tensors only). On the CPU a background thread samples the process's resident set size
from `/proc/self/statm` every `interval` seconds (default 1 ms), so it sees allocations that live
at least that long across Python steps (the sampler needs the GIL, which a single long torch op
may hold), tensors and everything else; where `/proc` is missing it falls back to
`resource.getrusage`'s lifetime maximum (then only growth of the peak is seen). The resident
set only grows when the allocator asks the system for pages: memory freed earlier in the process
and reused inside the block does not show, so on the CPU the figure is a lower bound.

Example:
    >>> with MemoryMeter("cpu") as meter:
    ...     x = torch.ones(1024)
    >>> meter.peak_bytes >= 0
    True
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import torch

__all__ = ["MemoryMeter", "current_rss", "measure_peak_memory"]

T = TypeVar("T")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process, in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryMeter:
    """Measures the peak memory of the code inside `with MemoryMeter(device) as m:`.

    Attributes:
        peak_bytes: peak minus the level at entry (0 if memory only fell).
        method: "cuda-allocator" or "cpu-rss".
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 1e-3) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0
        self.method = "cuda-allocator" if self.device.type == "cuda" else "cpu-rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._max = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, current_rss())
            time.sleep(self.interval)

    def __enter__(self) -> MemoryMeter:
        if self.method == "cuda-allocator":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = self._max = current_rss()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.method == "cuda-allocator":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._max = max(self._max, current_rss())
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = self._max
        self.peak_bytes = max(0, peak - self._start)


def measure_peak_memory(
    fn: Callable[[], T], device: torch.device | str = "cpu", interval: float = 1e-3
) -> tuple[T, int]:
    """Run `fn()` under a `MemoryMeter`; return its result and the peak bytes above the start.

    Example:
        >>> _, peak = measure_peak_memory(lambda: torch.ones(1024).sum())
        >>> peak >= 0
        True
    """
    with MemoryMeter(device, interval) as meter:
        result = fn()
    return result, meter.peak_bytes
