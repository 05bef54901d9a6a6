"""A search's study and its part of the report: the Pareto front, infeasible and pruned trials.

The Optuna study of a search lives beside the run store (`study_path_of`). For each sweep of a
report that has a study, `search_sections` reads it (a file that is not an Optuna study, or a
missing Optuna, is skipped with a warning, never written), marks the report records of its runs
(`front: true` for members of the study's Pareto front, also named on the plots;
`infeasible: true` for runs that break a constraint: drawn apart on the trade-off plots and
never on their front) and returns a `Section`: the objectives and constraints, the trials by
outcome, a table of the front and a table of the infeasible trials. Pruned runs have the status
"pruned" in the store and are listed, with the pruner's reason, among the unfinished runs.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nettle.experiment.report_page import Section
from nettle.experiment.search_space import optuna_module

__all__ = [
    "TrialResult",
    "check_study_file",
    "format_value",
    "load_study",
    "pareto_trials",
    "search_sections",
    "study_path_of",
    "study_storage",
    "trial_result",
]

log = logging.getLogger(__name__)


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


def study_path_of(store_path: str | Path) -> Path:
    """Where the Optuna study of a store lives: `<store stem>-search.db` beside it."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + "-search.db")


def study_storage(path: Path) -> Any:
    """Optuna's storage of the study file `path` with the run store's SQLite settings (WAL
    journal, no sync at every commit: ask and tell take a third of the time)."""
    try:
        from sqlalchemy import event  # Optuna's dependency, there when Optuna is
    except ImportError:
        raise ImportError("the search needs Optuna: pip install 'nettle[search]'") from None

    storage = optuna_module().storages.RDBStorage(f"sqlite:///{path}")

    def pragmas(connection: Any, _: Any) -> None:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # the connections opened so far reconnect with the settings
    return storage


def check_study_file(path: Path) -> None:
    """Refuse, without writing to it, a file at `path` that is not an Optuna study database."""
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


def pareto_trials(study: Any) -> list[Any]:
    """The study's Pareto front of feasible trials (one objective: its best feasible trial)."""
    if len(study.directions) > 1:
        return study.best_trials
    try:
        return [study.best_trial]
    except ValueError:  # nothing complete and feasible yet
        return []


def trial_result(t: Any) -> TrialResult:
    """A complete trial of the study as a `TrialResult`."""
    violations = dict(t.constraints)
    return TrialResult(
        t.number, t.user_attrs.get("run_id"), t.params, "complete", t.values[0], list(t.values),
        all(v <= 0 for v in violations.values()), violations,
    )  # fmt: skip


def load_study(store_path: str | Path, sweep: str) -> Any | None:
    """The study of `sweep` beside the store, or None (no study, no Optuna, not a study)."""
    path = study_path_of(store_path)
    if not path.is_file():
        return None
    try:
        optuna = optuna_module()
        check_study_file(path)
        storage = f"sqlite:///{path}"
        if sweep not in optuna.get_all_study_names(storage):
            return None
        return optuna.load_study(study_name=sweep, storage=storage)
    except (ImportError, ValueError, RuntimeError) as exc:
        log.warning("search study of %s not read: %s", sweep, exc)
        return None


def format_value(v: float) -> str:
    """A trial's value: whole counts from 1000 with thousands separators, else 4 digits."""
    return f"{v:,.0f}" if abs(v) >= 1000 and float(v).is_integer() else f"{v:.4g}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in params.items()
    )


def _broken(violations: dict[str, float]) -> str:
    """The constraints a trial breaks and by how much, relative to each bound."""
    parts = []
    for name, v in violations.items():
        if v > 0:
            way = "over" if "<=" in name else "short"
            parts.append(f"{name}: {way} by {100 * v:.1f}%")
    return "; ".join(parts)


def _counts(trials: Sequence[Any], infeasible: set[int]) -> str:
    states = Counter(t.state.name.lower() for t in trials)
    complete = states.pop("complete", 0)
    bad = sum(1 for t in trials if t.number in infeasible and t.state.name == "COMPLETE")
    split = f" ({complete - bad} feasible, {bad} infeasible)" if infeasible else ""
    parts = [f"{complete} complete{split}"]
    parts += [f"{n} {s}" for s, n in sorted(states.items())]
    return f"{len(trials)} trials: " + ", ".join(parts) + "."


def _section(study: Any, sweep: str, records: list[dict[str, Any]]) -> Section:
    attrs = study.user_attrs
    objectives = attrs.get("objectives") or [
        [attrs.get("metric", "value"), study.direction.name.lower()]
    ]
    constraints = attrs.get("constraints") or []
    trials = study.get_trials(deepcopy=False)
    done_states = ("COMPLETE", "PRUNED")
    infeasible = {
        t.number
        for t in trials
        if t.state.name in done_states and any(v > 0 for v in t.constraints.values())
    }
    front = pareto_trials(study)
    front_ids = {t.user_attrs.get("run_id") for t in front}
    bad = [t for t in trials if t.number in infeasible]
    bad_ids = {t.user_attrs.get("run_id") for t in bad}
    for rec in records:
        if rec.get("id") in bad_ids:
            rec["infeasible"] = True
        if rec.get("id") in front_ids:
            rec["front"] = rec["label"] = True
    text = [
        "Objectives: " + ", ".join(f"{m} ({d})" for m, d in objectives) + "; constraints: "
        + (", ".join(constraints) or "none") + ".",
        _counts(trials, infeasible),
        f"The Pareto front ({len(front)} trials, feasible only; ringed on the error plots) and "
        "the infeasible trials (grey crosses on the error plots, never on the front):",
    ]  # fmt: skip
    metrics = [m for m, _ in objectives]
    rows = [_row(t, len(metrics), "front") for t in front]
    rows += [_row(t, len(metrics), "infeasible: " + _broken(dict(t.constraints))) for t in bad]
    heads = ["trial", "run", *metrics, "status", "values"]
    return Section(f"Search {sweep}", text, (heads, rows))


def _row(t: Any, n_metrics: int, status: str) -> list[str]:
    values = [format_value(v) for v in t.values or []]
    values += [""] * (n_metrics - len(values))
    return [str(t.number), t.user_attrs.get("run_id") or "", *values, status, _params(t.params)]


def search_sections(
    store_path: str | Path, sweeps: Sequence[str], records: list[dict[str, Any]]
) -> list[Section]:
    """A `Section` per sweep of `sweeps` that has a study beside the store; marks `records`
    of front members and infeasible runs (see the module docstring)."""
    sections = []
    for sweep in sweeps:
        study = load_study(store_path, sweep)
        if study is not None:
            sections.append(_section(study, sweep, records))
    return sections
