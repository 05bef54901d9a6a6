"""How long a sweep will take, and what it will cost, from the runs that already finished.

For every planned run that is not done, the seconds per epoch of the store's finished runs of
the same model and data set (median over them, from their start and finish times) times the
run's epochs. A run with no such finished run cannot be estimated and is named, never guessed.

Example:
    >>> est = estimate_sweep(plan, Store("runs/nettle.db"), usd_per_hour=3.06)  # doctest: +SKIP
    >>> est.hours, est.usd  # doctest: +SKIP
    (1.5, 4.59)
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from nettle.experiment.spec import SweepPlan
from nettle.experiment.store import Store

__all__ = ["SweepEstimate", "estimate_sweep"]


@dataclass
class SweepEstimate:
    """Estimated hours (and dollars at `usd_per_hour`) of a sweep's unfinished runs."""

    hours: float | None
    usd: float | None
    estimated: dict[str, float] = field(default_factory=dict)  # run id -> hours
    unknown: dict[str, str] = field(default_factory=dict)  # run id -> why not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kind(config: dict[str, Any]) -> tuple[str, str]:
    return (config["model"]["name"], config["data"]["name"])


def _epoch_seconds(store: Store) -> dict[tuple[str, str], float]:
    per_kind: dict[tuple[str, str], list[float]] = {}
    for row in store.query(status="done"):
        epochs = row["config"]["train"].get("epochs") or 0
        if row.get("started") is None or row.get("finished") is None or epochs <= 0:
            continue
        seconds = (row["finished"] - row["started"]) / epochs
        per_kind.setdefault(_kind(row["config"]), []).append(seconds)
    return {k: statistics.median(v) for k, v in per_kind.items()}


def estimate_sweep(plan: SweepPlan, store: Store | None, usd_per_hour: float) -> SweepEstimate:
    """Estimate the hours of the plan's runs that are not done (`store` None: no store yet);
    `hours` is None when any run cannot be estimated (see `unknown`)."""
    if not usd_per_hour >= 0 or usd_per_hour == float("inf"):
        raise ValueError(f"--price must be a finite number of dollars >= 0, got {usd_per_hour}")
    rates = _epoch_seconds(store) if store is not None else {}
    done = {r["id"] for r in store.query(status="done")} if store is not None else set()
    est = SweepEstimate(None, None)
    for run in plan.runs:
        if run.id in done:
            continue
        config = run.config.model_dump(mode="json")
        rate = rates.get(_kind(config))
        if rate is None:
            model, data = _kind(config)
            est.unknown[run.id] = f"no finished run of {model} on {data} in the store"
            continue
        est.estimated[run.id] = rate * run.config.train.epochs / 3600
    if not est.unknown:
        est.hours = sum(est.estimated.values())
        est.usd = est.hours * usd_per_hour
    return est
