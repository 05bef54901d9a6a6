"""nettle.experiment: runs in run dirs (`run.py`), sweeps, the run store and reports.

Example:
    >>> from nettle.config import load_config
    >>> from nettle.experiment import run_experiment
    >>> summary = run_experiment(load_config("examples/digits-cnn.yaml"))  # doctest: +SKIP
"""

from nettle.experiment.run import (
    build_model,
    default_run_dir,
    load_run_model,
    load_teacher,
    prepare_run_dir,
    run_experiment,
)

__all__ = [
    "build_model",
    "default_run_dir",
    "load_run_model",
    "load_teacher",
    "prepare_run_dir",
    "run_experiment",
]
