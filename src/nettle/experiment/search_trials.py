"""The trials of one search call: the scheduler's source of runs (`RunSource`).

`TrialSource` asks Optuna for a trial whenever a slot of the scheduler frees (ask/tell, so
trials are asynchronous), hands the trial's run to the scheduler (or, when the store already
has the run done or pruned, tells the stored outcome at once), reports each epoch of a running
job to the study's pruner, and tells the study each outcome from the store: the objective
values, the constraints (`Trial.set_constraint`), or the pruned or failed state.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from nettle.config import ConfigError
from nettle.experiment.resolve import plan_cost
from nettle.experiment.search_report import TrialResult
from nettle.experiment.search_space import SearchSpec, optuna_module, resolve_trial
from nettle.experiment.spec import PlannedRun
from nettle.experiment.store import Store

__all__ = ["TrialSource"]

log = logging.getLogger(__name__)
_COST = ("params", "macs")


def _label(number: int, params: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return f"trial {number}: " + ",".join(parts)


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


class TrialSource:
    """The trials of one call, as the scheduler's `RunSource`: asks Optuna for a trial when a
    slot frees, reports epochs to its pruner, tells it each outcome from the store."""

    def __init__(
        self,
        spec: SearchSpec,
        study: Any,
        store: Store,
        n_trials: int,
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
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
        self.costs: dict[str, dict[str, Any]] = {}
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
                # a Trial of the stored id (what study.ask returns), to report epochs to
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
                self._cost(run)  # before it runs: the first count imports the models
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
        rule = self.spec.pruner[0]
        return f"pruned at epoch {step}: {self.spec.intermediate} {value:.4g} ({rule} rule)"

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

    def _cost(self, run: PlannedRun) -> dict[str, Any]:
        """The plan cost of a run when an objective or constraint needs it (kept)."""
        keys = [o.metric for o in self.spec.objectives] + [c.metric for c in self.spec.constraints]
        if run.id not in self.costs and any(k in _COST for k in keys):
            try:
                self.costs[run.id] = plan_cost(run.config)
            except Exception as exc:  # a model the meta device cannot build
                log.warning("no plan cost of run %s: %s", run.id, exc)
        return self.costs.get(run.id, {})

    def _metric(self, run: PlannedRun, row: dict[str, Any], key: str) -> float | None:
        """A final metric of the run; params and MACs from its plan cost when not counted
        (then recorded in the store, for the report)."""
        metrics = row["metrics"]
        if key in _COST and key not in metrics:
            missing = {k: v for k, v in self._cost(run).items() if k not in metrics}
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
        missing = {o.metric for o, v in zip(self.spec.objectives, values) if v is None}
        missing |= {c.metric for c in self.spec.constraints if str(c) not in item.violations}
        if missing:
            have = ", ".join(sorted(row["metrics"])) or "none"
            item.reason = f"no finite {', '.join(sorted(missing))} among the run's metrics ({have})"
            return
        item.state, item.values, item.value = "complete", values, values[0]

    def _tell(self, trial: Any, item: TrialResult) -> None:
        states = {"complete": "COMPLETE", "pruned": "PRUNED", "fail": "FAIL"}
        state = getattr(self.trial_state, states[item.state])
        self.study.tell(trial, item.values if item.state == "complete" else None, state=state)
        self.results.append(item)
        self.emit("trial", asdict(item))
