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
runs whose resolved config has all the given values (a key that no run has is an error);
`include` adds runs. Every run is a validated `ExperimentConfig` (errors name the file, the
run's overrides and the field), identified by `config_hash` (the same spec gives the same ids
in every process); duplicates collapse to the first. A `model.budget` is solved here
(`nettle.experiment.resolve.resolve_budget`): the resolved config names the setting.

Example:
    >>> plan = plan_sweep({"name": "s", "grid": {"train.seed": [0, 1]}})
    >>> [r.name for r in plan.runs]
    ['train.seed=0', 'train.seed=1']
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nettle.config import ConfigError, ExperimentConfig, config_hash, load_config_dict
from nettle.safe_yaml import YAMLInputError, load_yaml_file

__all__ = ["PlannedRun", "SweepPlan", "load_sweep", "plan_sweep"]

MAX_RUNS = 10_000
"""The most runs one sweep file may plan."""
_KEYS = {"name", "base", "grid", "zip", "list", "include", "exclude"}
_MISSING = object()


@dataclass
class PlannedRun:
    """One run of a sweep: its id (config hash), readable name, overrides and config."""

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


def _mappings(items: Any, kind: str, source: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
        raise ConfigError(f"{source}: {kind} must be a list of mappings of dotted keys to values")
    return items


def _variants(spec: dict[str, Any], source: str) -> list[dict[str, Any]]:
    grid = spec.get("grid") or {}
    zipped = spec.get("zip") or {}
    listed = _mappings(spec.get("list"), "list", source) or [{}]
    for part, kind in ((grid, "grid"), (zipped, "zip")):
        if not isinstance(part, dict) or not all(isinstance(v, list) for v in part.values()):
            raise ConfigError(f"{source}: {kind} must map dotted keys to lists of values")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"{source}: zip lists differ in length ({sorted(lengths)})")
    total = math.prod(len(v) for v in grid.values()) * (max(lengths) if lengths else 1)
    if total * len(listed) > MAX_RUNS:
        raise ConfigError(
            f"{source}: the variations expand to {total * len(listed):,} runs; a sweep file "
            f"plans at most {MAX_RUNS:,} (split it, or use nettle sweep search)"
        )
    grid_variants = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    n = lengths.pop() if lengths else 1
    zip_variants = [{k: v[i] for k, v in zipped.items()} for i in range(n)] if zipped else [{}]
    return [g | z | v for g, z, v in itertools.product(grid_variants, zip_variants, listed)]


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _same(have: Any, want: Any) -> bool:
    if isinstance(have, list) and isinstance(want, (list, tuple)):
        return len(have) == len(want) and all(_same(a, b) for a, b in zip(have, want))
    return have == want and isinstance(have, bool) == isinstance(want, bool)


def _matches(tree: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(_same(_lookup(tree, k), v) for k, v in pattern.items())


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a sweep file with the bounded YAML loader (`nettle.safe_yaml`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    try:
        spec = load_yaml_file(path)
    except (YAMLInputError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    return spec if spec is not None else {}


def _resolve(base: dict[str, Any], name: str, overrides: dict[str, Any], source: str) -> PlannedRun:
    label = ",".join(f"{k}={_value(v)}" for k, v in overrides.items()) or "base"
    tree = {**base, "name": base.get("name", name)}
    where = f"{source} run [{label}]"
    cfg = load_config_dict(tree, _overrides_list(overrides), source=where)
    if cfg.model.budget is not None or cfg.model.weights is not None:
        from nettle.experiment.resolve import resolve_config  # the id names the exact network

        try:
            cfg = resolve_config(cfg)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return PlannedRun(config_hash(cfg), label, dict(overrides), cfg)


def plan_sweep(spec: str | Path | dict[str, Any]) -> SweepPlan:
    """Expand a sweep file (or an already-loaded mapping) into its runs.

    Raises:
        ConfigError: unknown top-level keys, malformed variations, an exclude key that no run
            has, or a run whose config does not validate (the message names the file, the
            run's overrides and the field).
    """
    source = "<sweep>"
    if not isinstance(spec, dict):
        source, spec = str(spec), load_sweep(spec)
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}"
        )
    name = str(spec.get("name") or "sweep")
    if "/" in name or name in {".", ".."}:
        raise ConfigError(f"{source}: name must be a plain folder name, got {name!r}")
    base = spec.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{source}: base must be a mapping (an experiment config)")
    excludes = _mappings(spec.get("exclude"), "exclude", source)
    includes = _mappings(spec.get("include"), "include", source)
    runs = [_resolve(base, name, v, source) for v in _variants(spec, source)]
    trees = [r.config.model_dump(mode="json") for r in runs]
    for key in {k for p in excludes for k in p}:
        if trees and all(_lookup(t, key) is _MISSING for t in trees):
            raise ConfigError(f"{source}: exclude: {key!r} is not a field of any run")
    kept = [r for r, t in zip(runs, trees) if not any(_matches(t, p) for p in excludes)]
    kept += [_resolve(base, name, v, source) for v in includes]
    plan, seen = SweepPlan(name), set()
    for run in kept:
        if run.id not in seen:
            seen.add(run.id)
            plan.runs.append(run)
    return plan
