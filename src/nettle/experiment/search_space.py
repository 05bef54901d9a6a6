"""A search file's `search:` section, checked before anything runs: space, objectives,
constraints, sampler and pruner (see `nettle.experiment.search` for the whole file).

    search:
      objectives: {test_acc: maximize, params: minimize}   # or metric: / direction: for one
      constraints: ["params <= 20000"]                     # KEY <= N or KEY >= N
      sampler: nsga2              # tpe | random | nsga2 | nsga3, or {name: nsga2,
                                  # population_size: 8}
      pruner: median              # median | percentile | successive_halving | hyperband |
                                  # threshold | none, or {name: median, n_warmup_steps: 1}
      intermediate: test_acc      # the epoch metric the pruner sees (default: the objective)
      space: {train.optim.lr: {low: 1.0e-3, high: 0.3, log: true}, train.optim.name: [sgd, adam]}

The sampler defaults to TPE for one objective and NSGA-II for several; the pruner to the
median rule for one objective and none for several (Optuna prunes single-objective studies
only). Options of a sampler or pruner are the keyword arguments of its Optuna class (the seed
is the search's). Every error is one line naming the key.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nettle.config import ConfigError
from nettle.experiment.spec import PlannedRun, load_sweep, plan_sweep

__all__ = [
    "Constraint",
    "Objective",
    "SearchSpec",
    "build_pruner",
    "build_sampler",
    "load_search",
    "optuna_module",
    "parse_space",
    "resolve_trial",
]

_VARIATIONS = ("grid", "zip", "list", "include", "exclude")
_SECTION = {
    "metric", "direction", "objectives", "constraints", "sampler", "pruner", "intermediate",
    "space",
}  # fmt: skip
_DIST_KEYS = {"low", "high", "log", "step"}
_DIRECTIONS = ("maximize", "minimize")
_SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "nsga2": "NSGAIISampler"}
_SAMPLERS["nsga3"] = "NSGAIIISampler"
_PRUNERS = {
    "median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner",
}  # fmt: skip
_OURS = {"seed", "constraints_func"}  # set by the search, never by the file
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*(\S+)\s*$")


def optuna_module() -> Any:
    """Optuna, or an ImportError that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError("search needs Optuna: pip install 'nettle[search]'") from None
    return optuna


@dataclass(frozen=True)
class Objective:
    """One objective: a metric of the store (or `params` / `macs`) and its direction."""

    metric: str
    direction: str


@dataclass(frozen=True)
class Constraint:
    """`metric <= bound` or `metric >= bound`; feasible when `violation` is 0 or less."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """How far `value` breaks the constraint, relative to the bound (<= 0: feasible)."""
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return gap / abs(self.bound) if self.bound else gap

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass
class SearchSpec:
    """A checked search file."""

    name: str
    base: dict[str, Any]
    source: str
    space: dict[str, Any]
    objectives: list[Objective]
    constraints: list[Constraint] = field(default_factory=list)
    sampler: tuple[str, dict[str, Any]] = ("tpe", {})
    pruner: tuple[str, dict[str, Any]] | None = None
    intermediate: str = "test_acc"


def _number(v: Any, key: str, part: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(v, str) else ""
        raise ConfigError(f"search.space.{key}: {part} must be a number, got {v!r}{hint}")
    return v


def _distribution(key: str, spec: Any) -> Any:
    """The Optuna distribution of one space entry; errors name the key."""
    dists = optuna_module().distributions
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


def resolve_trial(
    base: dict[str, Any], name: str, params: dict[str, Any], source: str
) -> PlannedRun:
    """The planned run of `base` with a trial's `params` (dotted keys); errors name `source`."""
    try:
        return plan_sweep({"name": name, "base": base, "list": [params]}).runs[0]
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


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
            resolve_trial(base or {}, name, {key: value}, f"{source}: search.space.{key}")
    return dists


def _direction(value: Any, where: str) -> str:
    if value not in _DIRECTIONS:
        raise ConfigError(f"{where}: direction must be maximize or minimize, got {value!r}")
    return str(value)


def _objectives(section: dict[str, Any], metric: str | None, direction: str | None, source: str):
    where = f"{source}: search"
    if metric is not None or direction is not None:  # one objective, from the caller
        metric = metric or section.get("metric") or "test_acc"
        return [Objective(metric, _direction(direction or "maximize", f"{where}.direction"))]
    if "objectives" not in section:
        metric = section.get("metric") or "test_acc"
        if not isinstance(metric, str):
            raise ConfigError(f"{where}.metric: expected a metric name, got {metric!r}")
        return [Objective(metric, _direction(section.get("direction", "maximize"), where))]
    if "metric" in section or "direction" in section:
        raise ConfigError(f"{where}: give objectives or metric/direction, not both")
    objectives = section["objectives"]
    if not isinstance(objectives, dict) or not objectives:
        raise ConfigError(
            f"{where}.objectives: expected a mapping of metric to direction, "
            "e.g. {test_acc: maximize, params: minimize}"
        )
    return [
        Objective(str(k), _direction(v, f"{where}.objectives.{k}")) for k, v in objectives.items()
    ]


def _constraints(raw: Any, source: str) -> list[Constraint]:
    where = f"{source}: search.constraints"
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list such as ['params <= 20000', 'macs <= 1.0e6']")
    out = []
    for item in raw:
        match = _CONSTRAINT.match(item) if isinstance(item, str) else None
        bound = None
        if match:
            with contextlib.suppress(ValueError):
                bound = float(match.group(3))
        if bound is None or not math.isfinite(bound):
            raise ConfigError(
                f"{where}: {item!r} is not KEY <= N or KEY >= N with a finite number N "
                "(e.g. 'params <= 20000')"
            )
        out.append(Constraint(match.group(1), match.group(2), bound))
    return out


def _choice(raw: Any, table: dict[str, str], where: str, none_ok: bool) -> tuple[str, dict]:
    """`name` or `{name: ..., **options}`, the options checked against the Optuna class."""
    known = sorted(table) + ["none"] * none_ok
    options = {}
    if isinstance(raw, dict):
        options = {k: v for k, v in raw.items() if k != "name"}
        raw = raw.get("name")
    name = raw.lower() if isinstance(raw, str) else raw
    if name == "none" and none_ok:
        if options:
            raise ConfigError(f"{where}: none takes no options")
        return "none", {}
    if name not in table:
        raise ConfigError(f"{where}: unknown {raw!r}; known: {', '.join(known)}")
    cls = getattr(_optuna_home(where), table[name])
    accepted = sorted(set(inspect.signature(cls).parameters) - _OURS)
    for key, value in options.items():
        if key not in accepted:
            raise ConfigError(f"{where}: {name} has no option {key!r}; options: {accepted}")
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise ConfigError(f"{where}.{key}: expected a number, text or true/false")
    try:
        cls(**options)  # the class checks the values
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name}: {exc}") from None
    return name, options


def _optuna_home(where: str) -> Any:
    optuna = optuna_module()
    return optuna.pruners if where.endswith("pruner") else optuna.samplers


def _sections(spec: Any, source: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
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
    return name, rest.get("base") or {}, section


def load_search(
    spec: str | Path | dict[str, Any],
    *,
    metric: str | None = None,
    direction: str | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
) -> SearchSpec:
    """Read and check a search file (or its mapping); the keyword arguments override the
    file's (`metric`/`direction` replace its objectives with one).

    Raises:
        ConfigError: a malformed file or section (one line naming the key).
        ImportError: Optuna is not installed.
    """
    source = "<search>" if isinstance(spec, dict) else str(spec)
    mapping = spec if isinstance(spec, dict) else load_sweep(spec)
    name, base, section = _sections(mapping, source)
    space = parse_space(section.get("space"), base, name, source)
    objectives = _objectives(section, metric, direction, source)
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError(f"{source}: search.objectives: a metric appears twice")
    several = len(objectives) > 1
    sampler_raw = sampler or section.get("sampler") or ("nsga2" if several else "tpe")
    pruner_raw = pruner or section.get("pruner") or ("none" if several else "median")
    where = f"{source}: search."
    pruned = _choice(pruner_raw, _PRUNERS, where + "pruner", none_ok=True)
    if several and pruned[0] != "none":
        raise ConfigError(
            f"{where}pruner: Optuna prunes single-objective searches only; "
            "set pruner: none or keep one objective"
        )
    intermediate = section.get("intermediate") or objectives[0].metric
    if not isinstance(intermediate, str):
        raise ConfigError(f"{where}intermediate: expected an epoch metric name, e.g. test_acc")
    return SearchSpec(
        name=name,
        base=base,
        source=source,
        space=space,
        objectives=objectives,
        constraints=_constraints(section.get("constraints"), source),
        sampler=_choice(sampler_raw, _SAMPLERS, where + "sampler", none_ok=False),
        pruner=None if pruned[0] == "none" else pruned,
        intermediate=intermediate,
    )


def build_sampler(spec: SearchSpec, seed: int | None) -> Any:
    """The Optuna sampler of `spec`, seeded with `seed`."""
    name, options = spec.sampler
    return getattr(optuna_module().samplers, _SAMPLERS[name])(seed=seed, **options)


def build_pruner(spec: SearchSpec) -> Any:
    """The Optuna pruner of `spec` (`NopPruner` when pruning is off)."""
    pruners = optuna_module().pruners
    if spec.pruner is None:
        return pruners.NopPruner()
    name, options = spec.pruner
    return getattr(pruners, _PRUNERS[name])(**options)
