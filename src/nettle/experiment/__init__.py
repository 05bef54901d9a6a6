"""nettle.experiment: runs in run dirs (`run.py`), sweeps (`spec.py`, `schedule.py`), the run
store (`store.py`) and reports (`report.py`).

Names are imported on first use, so that reading the store or planning a sweep does not
import torch.

Example:
    >>> from nettle.config import load_config
    >>> from nettle.experiment import run_experiment, run_sweep, Store
    >>> summary = run_experiment(load_config("examples/digits-cnn.yaml"))  # doctest: +SKIP
    >>> result = run_sweep("examples/sweep-digits.yaml", slots=2)  # doctest: +SKIP
    >>> [r["name"] for r in Store("runs/nettle.db").query(status="done")]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module of this package that defines it
_EXPORTS = {
    "default_run_dir": "run",
    "prepare_run_dir": "run",
    "run_experiment": "run",
    "PlannedRun": "spec",
    "SweepPlan": "spec",
    "load_sweep": "spec",
    "plan_sweep": "spec",
    "Store": "store",
    "StoreError": "store",
    "SweepResult": "driver",
    "run_sweep": "schedule",
    "run_job": "job",
    "run_stages": "evaluation",
    "collect_stages": "evaluation",
    "record_run": "record",
    "write_report": "report",
    "report_from_store": "store_report",
    "run_search": "search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nettle.experiment' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nettle.experiment.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
