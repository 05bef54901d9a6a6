"""The experiment record: what the store holds of a run, written in one place.

Every way of running (a sweep on local slots, Ray or Slurm, `nettle train`, `nettle attack`)
records through these functions, so a run's row has the same statuses and numbers whichever
way it ran:

- `record_plan`: a sweep's runs, and their membership of the sweep (a run planned by two
  sweeps is one row listed in both);
- `finished` / `record_run`: a run is finished when its `summary.json` says done *and* every
  evaluation stage of its config is in the run dir (`nettle.experiment.evaluation`); then its
  final training metrics, cost and robust accuracies (keyed by attack, options, epsilon and
  examples) are recorded, the status last, so a done row always has its numbers;
- `store_for`: the store of the root a run dir is under, for the verbs that take a run dir;
- `code_version`: the code that ran (git commit with a `-dirty` flag, else the package version).

A job's files: `config.yaml` (the identity, written once), `job.yaml` (the full config the
latest job ran with: execution and evaluation settings may change between jobs).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

from nettle.config import ExperimentConfig, dump_config
from nettle.experiment import worker
from nettle.experiment.evaluation import Stages, collect_stages, robustness_rows
from nettle.experiment.spec import PlannedRun, SweepPlan
from nettle.experiment.store import Store
from nettle.files import atomic_write

__all__ = [
    "code_version",
    "default_command",
    "finished",
    "git",
    "record_outcome",
    "record_plan",
    "record_run",
    "record_stages",
    "run_dir_of",
    "settle",
    "store_for",
    "store_path_for",
    "write_job_config",
]

STORE_NAME = "nettle.db"


def git(*args: str) -> str | None:
    """The output of `git ARGS` in the package's checkout, or None (no git, not a checkout)."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache
def code_version() -> str:
    """`git describe --always --dirty` of the package's checkout, else `nettle <version>`."""
    from nettle import __version__

    return git("describe", "--always", "--dirty", "--abbrev=12") or f"nettle {__version__}"


def run_dir_of(root: str | Path, sweep: str, run_id: str) -> Path:
    """`<root>/<sweep>/<run id>`."""
    return Path(root) / sweep / run_id


def default_command(config: Path, run_dir: Path) -> list[str]:
    """The job every executor runs: `python -m nettle _job CONFIG -o RUN_DIR` (train, then
    the evaluation stages; the driver records the results)."""
    return [sys.executable, "-m", "nettle", "_job", str(config), "-o", str(run_dir)]


def record_plan(store: Store, plan: SweepPlan, root: str | Path) -> None:
    """Add the plan's runs to the store and to the sweep (known runs keep rows and run dirs)."""
    store.add_runs(
        {
            "id": r.id,
            "sweep": plan.name,
            "name": r.name,
            "config": r.config.model_dump(mode="json"),
            "run_dir": str(run_dir_of(root, plan.name, r.id)),
        }
        for r in plan.runs
    )


def write_job_config(run: PlannedRun, run_dir: Path) -> Path:
    """Write `config.yaml` if absent (the run's identity) and `job.yaml` (this job's config)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = dump_config(run.config)
    if not (run_dir / "config.yaml").exists():
        atomic_write(run_dir / "config.yaml", text)
    return atomic_write(run_dir / "job.yaml", text)


def finished(run_dir: Path, cfg: ExperimentConfig) -> tuple[dict[str, Any], Stages] | None:
    """The summary and evaluation stages of a run that is done with `cfg`, else None."""
    summary = worker.read_summary(run_dir) or {}
    if summary.get("status") != "done":
        return None
    stages = collect_stages(run_dir, cfg)
    return None if stages is None else (summary, stages)


def record_stages(store: Store, run_id: str, stages: Stages) -> None:
    """Record the cost and robust accuracies of a run's evaluation stages."""
    store.record_metrics(run_id, stages.metrics())
    if stages.attack is not None:
        rows = robustness_rows(stages.attack)
        stage = next((f for f in stages.files if "/attack-" in f), None)
        store.record_robustness(run_id, [r | {"stage": stage} for r in rows])


def record_run(store: Store, run_id: str, run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Record a finished run's numbers, then its done status; False if it is not finished."""
    done = finished(run_dir, cfg)
    if done is None:
        return False
    summary, stages = done
    store.record_metrics(run_id, worker.final_metrics(summary))
    record_stages(store, run_id, stages)
    store.set_status(run_id, "done")  # after the numbers: a done row has them
    return True


def settle(store: Store, run: PlannedRun, run_dir: Path, row: dict[str, Any]) -> bool:
    """Whether `run` is finished with its config's stages, recorded if the store missed it.

    A done row whose run dir lacks a stage of this config (say, new epsilons) is planned
    again: its job trains nothing and runs only the missing stages.
    """
    if finished(run_dir, run.config) is not None:
        if row.get("status") != "done":
            record_run(store, run.id, run_dir, run.config)
        return True
    if row.get("status") == "done":
        store.set_status(run.id, "planned", reason="new evaluation stages")
    return False


def record_outcome(store: Store, run: PlannedRun, run_dir: Path) -> str | None:
    """Record a job that exited as done; the reason it is not finished, or None."""
    if record_run(store, run.id, run_dir, run.config):
        return None
    return "the job exited 0 but an evaluation stage is missing from the run dir"


def store_path_for(run_dir: str | Path, explicit: str | Path | None = None) -> Path:
    """Where the store of the root `run_dir` is under lies: `explicit` if given; else the
    first `nettle.db` in the run dir's parent or grandparent; else (a new one) the grandparent
    when the run dir is at least two folders below the working folder (`runs/nettle.db` for
    the default `runs/<name>/<id>`), its parent otherwise (never above the working folder for
    a run dir inside it)."""
    if explicit is not None:
        return Path(explicit)
    run_dir = Path(run_dir).resolve()
    for folder in (run_dir.parent, run_dir.parent.parent):
        if (folder / STORE_NAME).is_file():
            return folder / STORE_NAME
    try:
        depth = len(run_dir.relative_to(Path.cwd().resolve()).parts)
    except ValueError:  # outside the working folder
        depth = 0
    return (run_dir.parent.parent if depth >= 3 else run_dir.parent) / STORE_NAME


def store_for(run_dir: str | Path, explicit: str | Path | None = None) -> Store:
    """The store of the root `run_dir` is under (`store_path_for`), opened or created."""
    return Store(store_path_for(run_dir, explicit))
