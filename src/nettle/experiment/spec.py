"""Sweep specs: a base config and its variations, expanded to runs with stable ids.

A sweep file (YAML, safe loader):

    name: digits-lr
    base: {model: {name: simple-cnn}, train: {epochs: 3}}
    grid: {train.optim.lr: [0.01, 0.05], train.seed: [0, 1]}       # cartesian product
    zip: {train.epochs: [2, 4], data.batch_size: [32, 64]}         # varied together
    list: [{model.conv: Sep}, {model.conv: Generic_0.1}]           # explicit variants
    exclude: [{train.optim.lr: 0.01, train.seed: 1}]               # drop matching runs
    include: [{train.optim.lr: 0.2}]                               # add runs

The expansion is grid x zip x list (each absent part is one empty variant); `exclude` removes
runs whose overrides match all the given keys; `include` adds runs. Every run is a validated
`ExperimentConfig` (errors name the file, the run's overrides and the field), identified by
`config_hash` (the same spec gives the same ids in every process); duplicates collapse.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nettle.config import ConfigError, ExperimentConfig, config_hash, load_config_dict

__all__ = ["PlannedRun", "SweepPlan", "plan_sweep"]

_KEYS = {"name", "base", "grid", "zip", "list", "include", "exclude"}


@dataclass
class PlannedRun:
    """One run of a sweep."""

    id: str
    name: str
    overrides: dict[str, Any]
    config: ExperimentConfig


@dataclass
class SweepPlan:
    """A sweep expanded into runs."""

    name: str
    runs: list[PlannedRun] = field(default_factory=list)


def _value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _overrides_list(d: dict[str, Any]) -> list[str]:
    return [f"{k}={_value(v)}" for k, v in d.items()]


def _variants(spec: dict[str, Any], source: str) -> list[dict[str, Any]]:
    grid = spec.get("grid") or {}
    zipped = spec.get("zip") or {}
    listed = spec.get("list") or [{}]
    for part, kind in ((grid, "grid"), (zipped, "zip")):
        if not isinstance(part, dict) or not all(isinstance(v, list) for v in part.values()):
            raise ConfigError(f"{source}: {kind} must map dotted keys to lists of values")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"{source}: zip lists differ in length ({sorted(lengths)})")
    grid_variants = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    n = lengths.pop() if lengths else 1
    zip_variants = [{k: v[i] for k, v in zipped.items()} for i in range(n)] if zipped else [{}]
    if not isinstance(listed, list) or not all(isinstance(v, dict) for v in listed):
        raise ConfigError(f"{source}: list must be a list of mappings of dotted keys")
    return [g | z | v for g, z, v in itertools.product(grid_variants, zip_variants, listed)]


def _matches(overrides: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(k in overrides and overrides[k] == v for k, v in pattern.items())


def plan_sweep(spec: str | Path | dict[str, Any]) -> SweepPlan:
    """Expand a sweep file (or an already-loaded mapping) into its runs."""
    source = "<sweep>"
    if not isinstance(spec, dict):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"{path}: no such sweep file")
        source = str(path)
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}"
        )
    name = str(spec.get("name") or "sweep")
    base = spec.get("base") or {}
    variants = [
        v
        for v in _variants(spec, source)
        if not any(_matches(v, p) for p in spec.get("exclude") or [])
    ]
    variants += list(spec.get("include") or [])
    plan, seen = SweepPlan(name), set()
    for overrides in variants:
        label = ",".join(f"{k}={_value(v)}" for k, v in overrides.items()) or "base"
        tree = {**base, "name": base.get("name", name)}
        cfg = load_config_dict(tree, _overrides_list(overrides), source=f"{source} run [{label}]")
        run_id = config_hash(cfg)
        if run_id in seen:
            continue
        seen.add(run_id)
        plan.runs.append(PlannedRun(run_id, label, dict(overrides), cfg))
    return plan
