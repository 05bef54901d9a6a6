"""Budget solver: find the substitute setting that meets a parameter (or MAC) budget.

The cost of a whole network as a function of the substitute's setting is monotone but
piecewise constant (ranks and group counts are integers), so the solver brackets the budget,
narrows the bracket by bisection (a scalar root finding on `cost(setting) - budget`) and returns
whichever bracket end comes closer. Integer settings (ShuffleNet groups, ACDC layers) are searched
over the integers. A budget outside what the substitute can reach is reported as unreachable
with the closest setting, never silently met.

Example:
    >>> from nettle.models import create_model
    >>> result = solve_budget(lambda conv: create_model("wrn-16-4", conv=conv), "Generic", 1e5)
    >>> result.reachable, abs(result.relative_error) < 0.01  # doctest: +SKIP
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import nn

from nettle.nn.substitutes import parse_spec

__all__ = ["SETTING_RANGES", "BudgetResult", "network_cost", "solve_budget"]

# name -> (kind, low, high, increasing): the searched range of each substitute's setting
SETTING_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "generic": ("float", 1e-3, 1.0, True),
    "lr": ("float", 1e-3, 1.0, True),
    "hashed": ("float", 1e-4, 1.0, True),
    "sephashed": ("float", 1e-4, 1.0, True),
    "tensortrain": ("float", 1e-3, 1.0, True),
    "tucker": ("float", 1e-3, 1.0, True),
    "cp": ("float", 1e-3, 1.0, True),
    "tensortrain4": ("float", 1e-3, 1.0, True),
    "tucker4": ("float", 1e-3, 1.0, True),
    "cp4": ("float", 1e-3, 1.0, True),
    "acdc": ("int", 2, 128, True),
    "originalacdc": ("int", 2, 128, True),
    "permutedacdc": ("int", 2, 128, True),
    "shuffle": ("int", 1, 64, False),
}

Metric = Literal["params", "macs"]


@dataclass
class BudgetResult:
    """The setting found for a budget and what it achieves."""

    conv: str
    setting: float
    target: float
    metric: str
    achieved: int
    params: int
    macs: int | None
    reachable: bool
    evaluations: int

    @property
    def relative_error(self) -> float:
        """(achieved - target) / target."""
        return (self.achieved - self.target) / self.target

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["relative_error"] = self.relative_error
        return out


def network_cost(
    model: nn.Module, input_shape: tuple[int, ...] | None = None
) -> tuple[int, int | None]:
    """Parameters of `model`, and its MACs (default convention) when `input_shape` is given."""
    params = sum(p.numel() for p in model.parameters())
    if input_shape is None:
        return params, None
    from nettle.measure import count

    return params, count(model, input_shape).macs


def _format(name: str, setting: float, kind: str) -> str:
    if kind == "int":
        return f"{name}_{int(setting)}"
    return f"{name}_{setting:.6g}"


def solve_budget(
    build: Callable[[str], nn.Module],
    substitute: str,
    budget: float,
    metric: Metric = "params",
    input_shape: tuple[int, ...] | None = None,
    tol: float = 1e-3,
    max_evaluations: int = 60,
) -> BudgetResult:
    """Find the setting of `substitute` whose network (built by `build(conv)`) meets `budget`.

    Args:
        build: makes the whole network from a conv spec such as `"Generic_0.1"`.
        substitute: the substitute's name, without a setting (`"Generic"`, `"Shuffle"`, ...).
        budget: the target number of parameters (or MACs per example).
        metric: `"params"` or `"macs"` (then `input_shape`, without batch, is required).
        tol: relative width of the bracket at which bisection stops (float settings).
        max_evaluations: a bound on the networks built.
    """
    name, setting = parse_spec(substitute)
    if setting is not None:
        raise ValueError(
            f"give the substitute without a setting, e.g. {name!r}, not {substitute!r}"
        )
    if name not in SETTING_RANGES:
        known = ", ".join(sorted(SETTING_RANGES))
        raise ValueError(f"no budget search for substitute {substitute!r}; searchable: {known}")
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if metric == "macs" and input_shape is None:
        raise ValueError("a MAC budget needs the input shape")
    kind, lo, hi, increasing = SETTING_RANGES[name]
    cache: dict[float, tuple[int, int | None]] = {}

    def cost(h: float) -> tuple[int, int | None]:
        if h not in cache:
            model = build(_format(name, h, kind))
            cache[h] = network_cost(model, input_shape if metric == "macs" else None)
        return cache[h]

    def value(h: float) -> int:
        params, macs = cost(h)
        return params if metric == "params" else int(macs or 0)

    def below(h: float) -> bool:  # is the cost at h under the budget?
        return value(h) <= budget

    # orient so that "low" is cheap and "high" expensive
    cheap, dear = (lo, hi) if increasing else (hi, lo)
    reachable = value(cheap) <= budget <= value(dear)
    if not reachable:
        best = cheap if budget < value(cheap) else dear
    else:
        a, b = cheap, dear  # invariant: value(a) <= budget <= value(b)
        while len(cache) < max_evaluations:
            if kind == "int" and abs(b - a) <= 1:
                break
            if kind == "float" and abs(b - a) <= tol * max(abs(a), abs(b), 1e-12):
                break
            mid = round((a + b) / 2) if kind == "int" else math.sqrt(a * b)
            if mid in (a, b):
                break
            a, b = (mid, b) if below(mid) else (a, mid)
        best = min((a, b), key=lambda h: abs(value(h) - budget))
    params, macs = cost(best)
    achieved = value(best)
    return BudgetResult(
        conv=_format(name, best, kind),
        setting=float(best),
        target=float(budget),
        metric=metric,
        achieved=achieved,
        params=params,
        macs=macs,
        reachable=reachable,
        evaluations=len(cache),
    )
