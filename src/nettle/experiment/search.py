"""Hyper-parameter search over sweep runs: Optuna proposes configs, the local scheduler runs them.

A search file is a sweep file with a `search:` section instead of variations:

    name: digits-search
    base: {model: {name: simple-cnn}, train: {epochs: 3}}
    search:
      metric: test_acc          # a final metric of the store (default test_acc)
      direction: maximize       # or minimize (default maximize)
      space:
        train.optim.lr: {low: 1.0e-3, high: 0.3, log: true}     # float (log scale)
        model.kwargs.width: {low: 8, high: 32, step: 8}         # int: both bounds whole
        train.optim.name: [sgd, adam]                           # choices

Each trial is an ordinary run: the base config with the trial's values, its id the config hash,
its run dir `<root>/<sweep>/<id>/`, recorded in the same store under the file's sweep name and
run by `run_sweep` (up to `slots` trials at a time, with its retries and preemption). A trial's
value is the run's final metric from the store; a failed run is a failed trial. The Optuna study
(named after the sweep) lives in `<store>-search.db` beside the store, so a later call continues
it: trials left running by a stopped search are run (resumed) first, and a trial whose config
is already done in the store takes the stored result without running again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nettle.config import ConfigError
from nettle.experiment.schedule import Command, run_sweep
from nettle.experiment.spec import PlannedRun, SweepPlan, load_sweep, plan_sweep
from nettle.experiment.store import Store

__all__ = ["SearchResult", "TrialResult", "parse_space", "run_search", "study_path_of"]

log = logging.getLogger(__name__)
Progress = Callable[[str, dict[str, Any]], None]
_VARIATIONS = ("grid", "zip", "list", "include", "exclude")
_SECTION = {"metric", "direction", "space"}
_DIST_KEYS = {"low", "high", "log", "step"}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ImportError("search needs Optuna: pip install 'nettle[search]'") from None
    return optuna


@dataclass
class TrialResult:
    """One trial: its number, run, sampled values, state and objective value."""

    number: int
    run_id: str | None
    params: dict[str, Any]
    state: str
    value: float | None = None
    reason: str | None = None
    reused: bool = False


@dataclass
class SearchResult:
    """What one `run_search` call did, and the study's best trial so far."""

    sweep: str
    metric: str
    direction: str
    study: str
    trials: list[TrialResult] = field(default_factory=list)
    total_trials: int = 0
    best: TrialResult | None = None
    best_run_dir: str | None = None
    interrupted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for `--json`."""
        return asdict(self)


def _number(v: Any, key: str, part: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(v, str) else ""
        raise ConfigError(f"search.space.{key}: {part} must be a number, got {v!r}{hint}")
    return v


def _distribution(key: str, spec: Any) -> Any:
    """The Optuna distribution of one space entry; errors name the key."""
    dists = _optuna().distributions
    where = f"search.space.{key}"
    if isinstance(spec, list):
        if not spec or not all(v is None or isinstance(v, (bool, int, float, str)) for v in spec):
            raise ConfigError(f"{where}: choices must be a non-empty list of scalars")
        return dists.CategoricalDistribution(spec)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{low, high[, log, step]}} or a list of choices")
    unknown = sorted(set(spec) - _DIST_KEYS)
    if unknown or not {"low", "high"} <= set(spec):
        bad = f"unknown key {unknown[0]!r}" if unknown else "needs low and high"
        raise ConfigError(f"{where}: {bad}; keys: low, high, log, step")
    low, high = _number(spec["low"], key, "low"), _number(spec["high"], key, "high")
    log_scale, step = spec.get("log", False), spec.get("step")
    if not isinstance(log_scale, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if step is not None:
        _number(step, key, "step")
    if low > high or (log_scale and low <= 0):
        raise ConfigError(f"{where}: need low <= high (and low > 0 with log), got {low}, {high}")
    if log_scale and step is not None:
        raise ConfigError(f"{where}: step and log cannot be combined")
    try:
        if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)):
            return dists.IntDistribution(low, high, log=log_scale, step=step or 1)
        return dists.FloatDistribution(low, high, log=log_scale, step=step)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_space(
    space: Any, base: dict[str, Any] | None = None, name: str = "search", source: str = "<search>"
) -> dict[str, Any]:
    """A `search.space` mapping as Optuna distributions, each bound and choice checked on `base`.

    Raises:
        ConfigError: a malformed entry, or a bound or choice the config refuses (the message
            names the key).
    """
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{source}: search.space must map dotted config keys to distributions")
    dists = {str(k): _distribution(str(k), v) for k, v in space.items()}
    for key, dist in dists.items():
        values = dist.choices if hasattr(dist, "choices") else (dist.low, dist.high)
        for value in values:
            _resolve(base or {}, name, {key: value}, f"{source}: search.space.{key}")
    return dists


def _resolve(base: dict[str, Any], name: str, params: dict[str, Any], source: str) -> PlannedRun:
    try:
        return plan_sweep({"name": name, "base": base, "list": [params]}).runs[0]
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _load(path: str | Path | dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    source = "<search>" if isinstance(path, dict) else str(path)
    spec = path if isinstance(path, dict) else load_sweep(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("search"), dict):
        raise ConfigError(f"{source}: a search file needs a `search:` mapping with a space")
    used = [k for k in _VARIATIONS if spec.get(k)]
    if used:
        raise ConfigError(f"{source}: {used[0]} does not apply to a search (it samples the base)")
    section = spec["search"]
    unknown = sorted(set(section) - _SECTION)
    if unknown:
        raise ConfigError(
            f"{source}: search: unknown key {unknown[0]!r}; known: {sorted(_SECTION)}"
        )
    rest = {k: v for k, v in spec.items() if k not in ("search", *_VARIATIONS)}
    name = plan_sweep(rest).name  # validates name and base
    return name, rest.get("base") or {}, section, source


def study_path_of(store_path: str | Path) -> Path:
    """Where the Optuna study of a store lives: `<store stem>-search.db` beside it."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + "-search.db")


def _sampler(kind: str, seed: int | None) -> Any:
    samplers = _optuna().samplers
    if kind == "tpe":
        return samplers.TPESampler(seed=seed)
    if kind == "random":
        return samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler must be tpe or random, got {kind!r}")


def _label(number: int, params: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return f"trial {number}: " + ",".join(parts)


def run_search(
    spec: str | Path | dict[str, Any],
    n_trials: int,
    store: Store | str | Path | None = None,
    *,
    root: str | Path = "runs",
    slots: int = 1,
    metric: str | None = None,
    direction: str | None = None,
    sampler: str = "tpe",
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
        slots: trials run at a time (CPU slots of the local scheduler).
        metric, direction: override the file's `search.metric` / `search.direction`.
        sampler: "tpe" or "random"; seeded with `seed` plus the study's trial count, so a
            continued study does not replay its first proposals.
        retries: extra attempts of a failed run.
        progress: callback `(event, info)`: the scheduler's events plus "trial" (one per
            finished trial: number, run id, state, value, params).
        command: `(config_path, run_dir) -> argv` of a job (default `nettle train`).

    Raises:
        ConfigError: a malformed search file or space.
        ValueError: bad arguments, or a metric or direction that differs from the study's.
        ImportError: Optuna is not installed (`pip install 'nettle[search]'`).
    """
    t0 = time.monotonic()
    optuna = _optuna()
    if n_trials < 0 or slots < 1:
        raise ValueError(f"need trials >= 0 and slots >= 1, got {n_trials} and {slots}")
    name, base, section, source = _load(spec)
    space = parse_space(section.get("space"), base, name, source)
    metric = metric or section.get("metric") or "test_acc"
    direction = direction or section.get("direction") or "maximize"
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    root = Path(root)
    store = store if isinstance(store, Store) else Store(store or root / "nettle.db")
    study_file = study_path_of(store.path)
    study = optuna.create_study(
        storage=f"sqlite:///{study_file}", study_name=name, direction=direction, load_if_exists=True
    )
    if study.direction.name.lower() != direction:
        raise ValueError(f"study {name!r} in {study_file} is {study.direction.name.lower()}d")
    known = study.user_attrs.get("metric")
    if known is None:
        study.set_user_attr("metric", metric)
    elif known != metric:
        raise ValueError(f"study {name!r} in {study_file} optimises {known!r}, not {metric!r}")
    study.sampler = _sampler(sampler, None if seed is None else seed + len(study.trials))
    emit = progress or (lambda event, info: None)
    result = SearchResult(name, metric, direction, str(study_file))

    def settle(number: int, params: dict[str, Any], run: PlannedRun, reused: bool) -> None:
        """Tell the study a trial's outcome from the store (unless it is not finished)."""
        row = store.get(run.id)
        item = TrialResult(number, run.id, params, "fail", reused=reused)
        if row is None or row["status"] != "done":
            if row is not None and row["status"] in ("running", "preempted"):
                return  # stopped or running elsewhere: left for a later call
            item.reason = (row or {}).get("reason") or "not run"
        else:
            value = row["metrics"].get(metric)
            if value is None or not math.isfinite(value):
                have = ", ".join(sorted(row["metrics"])) or "none"
                item.reason = f"no finite {metric!r} among the run's metrics ({have})"
            else:
                item.state, item.value = "complete", float(value)
        if item.state == "complete":
            study.tell(number, item.value)
        else:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        result.trials.append(item)
        emit("trial", asdict(item))

    def run_batch(batch: list[tuple[int, dict[str, Any], PlannedRun]]) -> bool:
        """Run a batch's unfinished runs together and settle its trials; False if stopped."""
        todo: dict[str, PlannedRun] = {}
        reused = set()
        for number, _, run in batch:
            row = store.get(run.id)
            if row is not None and row["status"] == "done":
                reused.add(number)
            else:
                todo.setdefault(run.id, run)
        interrupted = False
        if todo:
            plan = SweepPlan(name, list(todo.values()))
            opts = {"root": root, "slots": min(slots, len(todo)), "retries": retries}
            out = run_sweep(plan, store, progress=progress, command=command, **opts)
            interrupted = out.interrupted
        for number, params, run in batch:
            settle(number, params, run, number in reused)
        return not interrupted

    left = []  # trials a stopped call left running
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_id = t.user_attrs.get("run_id")
        if run_id and set(t.params) == set(space):
            left.append((t.number, t.params, _resolve(base, name, t.params, source)))
    going, new = True, 0
    for i in range(0, len(left), slots):
        going = going and run_batch(left[i : i + slots])
    while going and new < n_trials:
        batch = []
        for _ in range(min(slots, n_trials - new)):
            trial = study.ask(space)
            try:
                run = _resolve(base, name, trial.params, source)
            except ConfigError as exc:  # a combination the config refuses
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                result.trials.append(TrialResult(trial.number, None, trial.params, "fail"))
                result.trials[-1].reason = str(exc)
                new += 1
                continue
            run.name = _label(trial.number, trial.params)
            trial.set_user_attr("run_id", run.id)
            batch.append((trial.number, trial.params, run))
            new += 1
        going = run_batch(batch)
    result.interrupted = not going
    result.total_trials = len(study.trials)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        best = study.best_trial
        run_id = best.user_attrs.get("run_id")
        result.best = TrialResult(best.number, run_id, best.params, "complete", best.value)
        row = store.get(run_id) if run_id else None
        result.best_run_dir = row.get("run_dir") if row else None
    result.seconds = time.monotonic() - t0
    return result
