"""A run's job: train, then every evaluation stage of its config, all inside the run dir.

Every executor runs this same job (`nettle _job CONFIG -o RUN_DIR`, see
`nettle.experiment.record.default_command`): the local slots, Ray tasks and Slurm jobs of a
sweep, and `nettle train` itself. Both parts resume: training continues from its checkpoint
(and returns at once when done), and an evaluation stage that is already in the run dir is
read, not recomputed (`nettle.experiment.evaluation`). So changing `evaluate.eps` and
running the sweep again runs only the new attack stage.

A job never writes the store: the driver that started it records the run
(`nettle.experiment.record.record_run`) once the job exits; `nettle train` is its own driver.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nettle.config import ExperimentConfig
from nettle.experiment.evaluation import Stages, run_stages
from nettle.experiment.run import run_experiment

__all__ = ["run_job"]

Progress = Callable[[str, dict[str, Any]], None]


def run_job(
    cfg: ExperimentConfig, run_dir: str | Path, progress: Progress | None = None
) -> tuple[dict[str, Any], Stages]:
    """Train `cfg` in `run_dir` (resuming), then run its missing evaluation stages.

    Returns:
        The training summary and the evaluation stages (cost, robust accuracy, inspection).

    Raises:
        NonFiniteLossError: training stopped on a NaN/Inf loss (no stage runs).
    """
    summary = run_experiment(cfg, run_dir, progress=progress)
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 alone evaluates and writes
        return summary, Stages()
    stages = run_stages(Path(run_dir), cfg, progress=progress)
    return summary, stages
