"""Hyper-parameter search over sweep runs: Optuna proposes configs, the local scheduler runs them.

A search file is a sweep file with a `search:` section instead of variations (its keys:
`nettle.experiment.search_space`):

    name: digits-search
    base: {model: {name: simple-cnn}, train: {epochs: 3}}
    search:
      objectives: {test_acc: maximize, params: minimize}    # or metric: / direction:
      constraints: ["params <= 20000"]
      space:
        train.optim.lr: {low: 1.0e-3, high: 0.3, log: true}     # float (log scale)
        model.kwargs.width: {low: 8, high: 32, step: 8}         # int: both bounds whole
        train.optim.name: [sgd, adam]                           # choices

Each trial is an ordinary run: the base config with the trial's values, its id the config hash,
its run dir `<root>/<sweep>/<id>/`, recorded in the same store under the file's sweep name and
run by `run_sweep` with its retries. Trials are asynchronous: a new trial is asked for whenever
a slot frees (Optuna's ask/tell), never a batch at a time. An objective or constraint is a
final metric of the store; `params` and `macs` are the run's count stage, or else its plan
cost (`nettle.experiment.resolve.plan_cost`, recorded in the store for the report). A
constraint is given to the sampler with `Trial.set_constraint` (relative violation, feasible
at 0 or less); infeasible trials never make the front, and one objective with constraints is
a satisficing search (the most accurate network within the budget). With one objective the
pruner sees each epoch of `metrics.jsonl` (`search.intermediate`); a run it prunes is stopped
(its process group) and is "pruned" in the store and the study. A failed run is a failed trial.

The Optuna study (named after the sweep) lives in `<store>-search.db` beside the store, so a
later call continues it: trials left running by a stopped search are run (resumed) first, and a
trial whose config is already done (or pruned) in the store takes the stored result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nettle.experiment.schedule import Command, run_sweep
from nettle.experiment.search_report import (
    TrialResult,
    check_study_file,
    pareto_trials,
    study_path_of,
    study_storage,
    trial_result,
)
from nettle.experiment.search_space import (
    SearchSpec,
    build_pruner,
    build_sampler,
    load_search,
    optuna_module,
    parse_space,
)
from nettle.experiment.search_trials import TrialSource
from nettle.experiment.spec import SweepPlan
from nettle.experiment.store import Store

__all__ = [
    "SearchResult",
    "TrialResult",
    "check_study_file",
    "parse_space",
    "run_search",
    "study_path_of",
]

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class SearchResult:
    """What one `run_search` call did; the study's best trial (one objective) and its front."""

    sweep: str
    metric: str
    direction: str
    study: str
    objectives: list[dict[str, str]] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    trials: list[TrialResult] = field(default_factory=list)
    total_trials: int = 0
    best: TrialResult | None = None
    best_run_dir: str | None = None
    front: list[TrialResult] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for `--json`."""
        return asdict(self)


def _open_study(spec: SearchSpec, study_file: Path, seed: int | None) -> Any:
    """The study of `spec` (created or continued), checked against its objectives."""
    optuna = optuna_module()
    study = optuna.create_study(
        storage=study_storage(study_file),
        study_name=spec.name,
        directions=[o.direction for o in spec.objectives],
        load_if_exists=True,
        pruner=build_pruner(spec),
    )
    ours = [[o.metric, o.direction] for o in spec.objectives]
    attrs = study.user_attrs
    known = attrs.get("objectives") or (
        [[attrs["metric"], study.direction.name.lower()]] if "metric" in attrs else None
    )
    dirs = [d.name.lower() for d in study.directions]
    if known is None and dirs != [o.direction for o in spec.objectives]:
        known = [["?", d] for d in dirs]
    if known is not None and known != ours:

        def show(objs: list) -> str:
            return ", ".join(f"{m} ({d})" for m, d in objs)

        raise ValueError(
            f"study {spec.name!r} in {study_file} optimises {show(known)}, not {show(ours)}"
        )
    constraints = [str(c) for c in spec.constraints]
    if attrs.get("constraints", constraints) != constraints:
        raise ValueError(
            f"study {spec.name!r} in {study_file} has constraints {attrs['constraints']}, "
            f"not {constraints}: give the search another name"
        )
    study.set_user_attr("objectives", ours)
    study.set_user_attr("constraints", constraints)
    if "metric" not in attrs:
        study.set_user_attr("metric", spec.objectives[0].metric)
    study.sampler = build_sampler(spec, None if seed is None else seed + len(study.trials))
    return study


def run_search(
    spec: str | Path | dict[str, Any],
    n_trials: int,
    store: Store | str | Path | None = None,
    *,
    root: str | Path = "runs",
    slots: int = 1,
    metric: str | None = None,
    direction: str | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = 0,
    retries: int = 1,
    progress: Progress | None = None,
    command: Command | None = None,
) -> SearchResult:
    """Run `n_trials` more trials of a search file's study (see the module docstring).

    Args:
        spec: a search file (or its mapping).
        n_trials: new trials to run in this call (trials a stopped call left are run first).
        store: the run store (default `<root>/nettle.db`); the study goes beside it.
        root: runs go to `<root>/<sweep>/<run id>/`.
        slots: trials run at a time (CPU slots of the local scheduler); a trial starts as
            soon as a slot frees.
        metric, direction: one objective instead of the file's.
        sampler, pruner: instead of the file's (`search_space`); the sampler is seeded with
            `seed` plus the study's trial count, so a continued study does not replay its
            first proposals.
        retries: extra attempts of a failed run.
        progress: callback `(event, info)`: the scheduler's events plus "trial" (one per
            finished trial: the fields of `TrialResult`).
        command: `(config_path, run_dir) -> argv` of a job (default `nettle _job`).

    Raises:
        ConfigError: a malformed search file or section.
        ValueError: bad arguments, objectives or constraints that differ from the study's, or
            a study file that is not Optuna's.
        ImportError: Optuna is not installed (`pip install 'nettle[search]'`).
    """
    t0 = time.monotonic()
    if n_trials < 0 or slots < 1:
        raise ValueError(f"need trials >= 0 and slots >= 1, got {n_trials} and {slots}")
    search = load_search(spec, metric=metric, direction=direction, sampler=sampler, pruner=pruner)
    root = Path(root)
    store_path = store.path if isinstance(store, Store) else Path(store or root / "nettle.db")
    study_file = study_path_of(store_path)
    check_study_file(study_file)  # refusals first: nothing is created before them
    if not isinstance(store, Store) and (store_path.exists() or not study_file.exists()):
        store = Store(store_path)  # checks an existing store; a new study cannot differ
    study = _open_study(search, study_file, seed)
    store = store if isinstance(store, Store) else Store(store_path)
    emit = progress or (lambda event, info: None)
    first = search.objectives[0]
    result = SearchResult(search.name, first.metric, first.direction, str(study_file))
    result.objectives = [asdict(o) for o in search.objectives]
    result.constraints = [str(c) for c in search.constraints]
    trials = TrialSource(search, study, store, n_trials, emit)
    if trials.left or n_trials:
        plan = SweepPlan(search.name, [])
        opts = {"root": root, "slots": slots, "retries": retries, "command": command}
        out = run_sweep(plan, store, progress=progress, source=trials, **opts)
        result.interrupted = out.interrupted
    result.trials = trials.results
    result.total_trials = len(study.trials)
    result.front = [trial_result(t) for t in pareto_trials(study)]
    if len(search.objectives) == 1 and result.front:
        result.best = result.front[0]
        row = store.get(result.best.run_id) if result.best.run_id else None
        result.best_run_dir = row.get("run_dir") if row else None
    result.seconds = time.monotonic() - t0
    return result
