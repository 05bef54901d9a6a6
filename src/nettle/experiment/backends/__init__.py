"""Cluster backends of sweeps: the same `SweepPlan` on Ray (`ray.py`) or Slurm (`slurm.py`).

Both keep the local scheduler's contracts (run dirs, store statuses and reasons, skip done
runs, resume from checkpoints) with the store written by the driver only. Each imports its
package on first use and, when it is missing, says which extra installs it
(`pip install 'nettle[ray]'`, `pip install 'nettle[slurm]'`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"run_sweep_ray": "ray", "run_sweep_slurm": "slurm", "SweepJob": "slurm"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nettle.experiment.backends' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nettle.experiment.backends.{module}"), name)
