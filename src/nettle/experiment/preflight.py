"""Pre-flight: one training step of every run of a sweep before its queue starts.

`run_preflight` starts ONE subprocess (`python -m nettle _preflight RUNS.json`, the hidden verb
`nettle.cli._preflight`), pinned like a job, which goes through each run with
`preflight_config` (`preflight_runs`) and prints one JSON line per run as it finishes; every OOM and shape or config error is reported, none stops the others.
The scheduler's own process never imports torch for this, so it never initialises CUDA.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nettle.experiment import worker

__all__ = ["preflight_config", "preflight_runs", "run_preflight"]


class _OneStep(Exception):
    """Raised from the progress callback after the first optimiser step."""


def _stop_after_first_step(event: str, info: dict[str, Any]) -> None:
    if event == "step":
        raise _OneStep


def preflight_config(config: dict[str, Any]) -> dict[str, Any]:
    """Build a run's model and data and take one training step; never raises.

    The run goes through `run_experiment` itself (in a temporary run dir, without
    TensorBoard) and stops after its first step, so the check covers exactly what the run
    will build: data on the device, model, objective, optimiser, one step at the batch size.

    Returns:
        `{"ok", "error", "oom", "seconds", "peak_memory"}` (peak CUDA bytes, or None).
    """
    import gc

    import torch

    from nettle.config import load_config_dict
    from nettle.experiment.run import run_experiment

    t0, error, oom = time.perf_counter(), None, False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        cfg = load_config_dict(config, ["train.tensorboard=false"], source="preflight")
        with tempfile.TemporaryDirectory(prefix="nettle-preflight-") as tmp:
            run_experiment(cfg, Path(tmp) / "run", progress=_stop_after_first_step)
    except _OneStep:
        pass
    except Exception as exc:  # every failure is reported, none stops the others
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        is_oom = isinstance(exc, (MemoryError, torch.OutOfMemoryError))
        oom = is_oom or worker.is_oom(error)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    seconds = time.perf_counter() - t0
    return {
        "ok": error is None,
        "error": error,
        "oom": oom,
        "seconds": seconds,
        "peak_memory": peak,
    }


def run_preflight(
    runs: Sequence[tuple[str, dict[str, Any]]],
    env: dict[str, str],
    emit: Callable[[str, dict[str, Any]], None],
    stop: Callable[[], bool] = bool,
    grace: float = 10.0,
) -> list[dict[str, Any]]:
    """Preflight `(run id, config)` pairs in one subprocess with `env`; results in order.

    `emit("preflight", result)` is called as each run finishes; `stop()` aborts (the
    subprocess group is stopped and the results so far are returned).
    """
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nettle-preflight-") as tmp:
        spec = Path(tmp) / "runs.json"
        spec.write_text(json.dumps([{"id": i, "config": c} for i, c in runs]))
        argv = [sys.executable, "-m", "nettle", "_preflight", str(spec)]
        with open(Path(tmp) / "log.txt", "w+b") as log:
            proc = worker.start_job(argv, log, env, stdout=subprocess.PIPE)
            _collect(proc, results, emit, stop, grace)
            rc = proc.wait()
            if rc != 0 and not stop():
                error = f"preflight process exit {rc}: {worker.log_tail(Path(log.name), 0, 5)}"
                seen = {r["id"] for r in results}
                results += [
                    {"id": i, "ok": False, "error": error} for i, _ in runs if i not in seen
                ]
    return results


def _collect(
    proc: subprocess.Popen,
    results: list[dict[str, Any]],
    emit: Callable[[str, dict[str, Any]], None],
    stop: Callable[[], bool],
    grace: float,
) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if stop():
                worker.stop_group(proc.pid, grace, proc)
                return
            if not sel.select(0.2):
                continue
            line = proc.stdout.readline()
            if not line:
                return
            results.append(json.loads(line))
            emit("preflight", results[-1])


def preflight_runs(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`{"id"} | preflight_config(config)` for each `{"id", "config"}` item, as each finishes."""
    for item in items:
        yield {"id": item["id"]} | preflight_config(item["config"])
