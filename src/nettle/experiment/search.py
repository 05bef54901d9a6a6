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

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nettle.config import ConfigError
from nettle.experiment.resolve import plan_cost
from nettle.experiment.schedule import Command, run_sweep
from nettle.experiment.search_space import (
    SearchSpec,
    build_pruner,
    build_sampler,
    load_search,
    optuna_module,
    parse_space,
    resolve_trial,
)
from nettle.experiment.spec import PlannedRun, SweepPlan
from nettle.experiment.store import Store

__all__ = [
    "SearchResult",
    "TrialResult",
    "check_study_file",
    "parse_space",
    "run_search",
    "study_path_of",
]

log = logging.getLogger(__name__)
Progress = Callable[[str, dict[str, Any]], None]
_COST = ("params", "macs")


@dataclass
class TrialResult:
    """One trial: number, run, sampled values, state (complete, pruned, fail), objective values
    (`value` is the first), feasibility under the constraints and their relative violations."""

    number: int
    run_id: str | None
    params: dict[str, Any]
    state: str
    value: float | None = None
    values: list[float] | None = None
    feasible: bool | None = None
    violations: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    reused: bool = False


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


def study_path_of(store_path: str | Path) -> Path:
    """Where the Optuna study of a store lives: `<store stem>-search.db` beside it."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + "-search.db")


def check_study_file(path: Path) -> None:
    """Refuse, without writing to it, a file at `path` that is not an Optuna study database."""
    import sqlite3

    if not path.exists():
        return
    with open(path, "rb") as f:
        head = f.read(16) if path.is_file() else b""
    tables = set()
    if head == b"SQLite format 3\x00":
        try:
            db = sqlite3.connect(f"file:{path.resolve()}?mode=ro&immutable=1", uri=True)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            finally:
                db.close()
        except sqlite3.DatabaseError:
            pass
    if not {"studies", "trials"} <= tables:
        raise ValueError(f"{path}: not an Optuna study database; left as is: give another --store")


def _open_study(spec: SearchSpec, study_file: Path, seed: int | None) -> Any:
    """The study of `spec` (created or continued), checked against its objectives."""
    optuna = optuna_module()
    check_study_file(study_file)
    study = optuna.create_study(
        storage=f"sqlite:///{study_file}",
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


def _label(number: int, params: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return f"trial {number}: " + ",".join(parts)


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


class _Trials:
    """The trials of one call, as the scheduler's `RunSource`: asks Optuna for a trial when a
    slot frees, reports epochs to its pruner, tells it each outcome from the store."""

    def __init__(self, spec: SearchSpec, study: Any, store: Store, n_trials: int, emit) -> None:
        self.spec, self.study, self.store, self.n_trials, self.emit = (
            spec,
            study,
            store,
            n_trials,
            emit,
        )
        self.trial_state = optuna_module().trial.TrialState
        self.left: deque[tuple[Any, PlannedRun]] = deque()
        self.waiting: dict[str, list[Any]] = {}  # run id -> its trials (the first owns the job)
        self.reported: dict[int, set[int]] = {}
        self.results: list[TrialResult] = []
        self.asked = 0
        self._resume_left()

    def _resume_left(self) -> None:
        """Queue the trials a stopped call left running (first, before new ones)."""
        trial_cls = optuna_module().trial.Trial
        for t in self.study.get_trials(deepcopy=False, states=(self.trial_state.RUNNING,)):
            if t.user_attrs.get("run_id") and set(t.params) == set(self.spec.space):
                run = resolve_trial(self.spec.base, self.spec.name, t.params, self.spec.source)
                run.name = _label(t.number, t.params)
                self.reported[t.number] = set(t.intermediate_values)
                self.left.append((trial_cls(self.study, t._trial_id), run))

    def next_run(self) -> PlannedRun | None:
        """The run of the next trial that needs one (trials of a stored result are told)."""
        while True:
            if self.left:
                trial, run = self.left.popleft()
            elif self.asked < self.n_trials:
                self.asked += 1
                trial = self.study.ask(self.spec.space)
                try:
                    run = resolve_trial(
                        self.spec.base, self.spec.name, trial.params, self.spec.source
                    )
                except ConfigError as exc:  # a combination the config refuses
                    self._tell(
                        trial,
                        TrialResult(trial.number, None, trial.params, "fail", reason=str(exc)),
                    )
                    continue
                run.name = _label(trial.number, trial.params)
                trial.set_user_attr("run_id", run.id)
            else:
                return None
            if run.id in self.waiting:  # the same config runs now: it settles both
                self.waiting[run.id].append(trial)
                continue
            self.waiting[run.id] = [trial]
            row = self.store.get(run.id)
            if row is None or row["status"] not in ("done", "pruned"):
                return run
            self.ended(run, reused=True)

    def watch(self, run: PlannedRun, record: dict[str, Any]) -> str | None:
        """Report an epoch's intermediate value; a reason to stop the run if it is pruned."""
        trials = self.waiting.get(run.id)
        value, step = _finite(record.get(self.spec.intermediate)), record.get("epoch")
        if self.spec.pruner is None or not trials or value is None or not isinstance(step, int):
            return None
        for trial in trials:
            if step not in self.reported.setdefault(trial.number, set()):
                trial.report(value, step)
                self.reported[trial.number].add(step)
        if not trials[0].should_prune():
            return None
        return f"pruned at epoch {step}: {self.spec.intermediate} {value:.4g} ({self.spec.pruner[0]} rule)"

    def ended(self, run: PlannedRun, reused: bool = False) -> None:
        """Tell the study the outcome of each trial of `run`, unless the run is unfinished."""
        row = self.store.get(run.id)
        status = (row or {}).get("status")
        if status in ("running", "preempted"):
            self.waiting.pop(run.id, None)
            return  # stopped or running elsewhere: left for a later call
        for i, trial in enumerate(self.waiting.pop(run.id, [])):
            item = TrialResult(trial.number, run.id, trial.params, "fail", reused=reused or i > 0)
            if status not in ("done", "pruned"):
                item.reason = (row or {}).get("reason") or "not run"
            else:
                self._outcome(item, trial, run, row)
            self._tell(trial, item)

    def _metric(self, run: PlannedRun, row: dict[str, Any], key: str) -> float | None:
        """A final metric of the run; params and MACs from its plan cost when not counted."""
        metrics = row["metrics"]
        if key in _COST and key not in metrics:
            try:
                cost = plan_cost(run.config)
            except Exception as exc:  # a model the meta device cannot build
                log.warning("no plan cost of run %s: %s", run.id, exc)
                cost = {}
            missing = {k: v for k, v in cost.items() if k not in metrics}
            self.store.record_metrics(run.id, missing)
            metrics.update(missing)
        return _finite(metrics.get(key))

    def _outcome(self, item: TrialResult, trial: Any, run: PlannedRun, row: dict[str, Any]) -> None:
        """The objective values, constraints and state of a done or pruned run's trial."""
        for c in self.spec.constraints:
            value = self._metric(run, row, c.metric)
            if value is not None:
                item.violations[str(c)] = c.violation(value)
                trial.set_constraint(str(c), item.violations[str(c)])
        if len(item.violations) == len(self.spec.constraints):
            item.feasible = all(v <= 0 for v in item.violations.values())
        if row["status"] == "pruned":
            item.state, item.reason = "pruned", row.get("reason")
            return
        values = [self._metric(run, row, o.metric) for o in self.spec.objectives]
        missing = [o.metric for o, v in zip(self.spec.objectives, values) if v is None]
        if missing or item.feasible is None:
            have = ", ".join(sorted(row["metrics"])) or "none"
            item.reason = (
                f"no finite {missing or 'constraint metric'!r} among the run's metrics ({have})"
            )
            return
        item.state, item.values, item.value = "complete", values, values[0]

    def _tell(self, trial: Any, item: TrialResult) -> None:
        states = {"complete": "COMPLETE", "pruned": "PRUNED", "fail": "FAIL"}
        state = getattr(self.trial_state, states[item.state])
        self.study.tell(trial, item.values if item.state == "complete" else None, state=state)
        self.results.append(item)
        self.emit("trial", asdict(item))


def _frozen_result(t: Any) -> TrialResult:
    violations = dict(t.constraints)
    return TrialResult(
        t.number, t.user_attrs.get("run_id"), t.params, "complete", t.values[0], list(t.values),
        all(v <= 0 for v in violations.values()), violations,
    )  # fmt: skip


def _front(study: Any) -> list[Any]:
    """The study's Pareto front of feasible trials (one objective: its best feasible trial)."""
    if len(study.directions) > 1:
        return study.best_trials
    try:
        return [study.best_trial]
    except ValueError:  # nothing complete and feasible yet
        return []


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
    store = store if isinstance(store, Store) else Store(store or root / "nettle.db")
    study_file = study_path_of(store.path)
    study = _open_study(search, study_file, seed)
    emit = progress or (lambda event, info: None)
    first = search.objectives[0]
    result = SearchResult(search.name, first.metric, first.direction, str(study_file))
    result.objectives = [asdict(o) for o in search.objectives]
    result.constraints = [str(c) for c in search.constraints]
    trials = _Trials(search, study, store, n_trials, emit)
    if trials.left or n_trials:
        plan = SweepPlan(search.name, [])
        opts = {"root": root, "slots": slots, "retries": retries, "command": command}
        out = run_sweep(plan, store, progress=progress, source=trials, **opts)
        result.interrupted = out.interrupted
    result.trials = trials.results
    result.total_trials = len(study.trials)
    result.front = [_frozen_result(t) for t in _front(study)]
    if len(search.objectives) == 1 and result.front:
        result.best = result.front[0]
        row = store.get(result.best.run_id) if result.best.run_id else None
        result.best_run_dir = row.get("run_dir") if row else None
    result.seconds = time.monotonic() - t0
    return result
