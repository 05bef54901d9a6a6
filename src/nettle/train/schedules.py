"""Learning-rate schedules, stepped once per iteration.

Each schedule is a multiplier of the optimiser's base LR as a function of the step, built from
`ScheduleConfig` and the total number of steps; `create_scheduler` wraps it in a `LambdaLR`
(`onecycle` uses torch's `OneCycleLR`).

- `constant`: 1 (after an optional linear warmup).
- `step`: multiplied by `gamma` at each milestone (fractions of training).
- `cosine`: linear warmup, then half a cosine down to `min_lr`.
- `clr`: triangular cyclical LR (Smith 2017, arXiv:1506.01186): `cycles` triangles between
  `min_lr` and `max_lr` over the first `1 - annihilation` of training, then a final annihilation
  (Smith & Topin 2018, super-convergence, arXiv:1708.07120) falling linearly from `min_lr` to
  `min_lr / 100`. With `min_lr: 0` the low end is `max_lr / 10`.
- `onecycle`: torch's `OneCycleLR` (two phases: cosine up from `max_lr / 25` to `max_lr` over
  `pct_start` of training, then cosine down to `max_lr / 25 / 1e4`; warmup and `min_lr` are not
  used); `schedule_factor` reproduces its values for plots and tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nettle.config import ScheduleConfig
from nettle.registry import Registry

__all__ = ["SCHEDULES", "create_scheduler", "lr_at", "schedule_factor"]

Factor = Callable[[int], float]
SCHEDULES: Registry[Callable[[ScheduleConfig, int, float], Factor]] = Registry("schedule")


def _warmup(cfg: ScheduleConfig, total: int, steps_per_epoch: int) -> int:
    return min(total, round(cfg.warmup_epochs * steps_per_epoch))


@SCHEDULES.register("constant")
def _constant(cfg: ScheduleConfig, total: int, base_lr: float) -> Factor:
    return lambda step: 1.0


@SCHEDULES.register("step")
def _step(cfg: ScheduleConfig, total: int, base_lr: float) -> Factor:
    bounds = sorted(round(m * total) for m in cfg.milestones)
    return lambda step: cfg.gamma ** sum(step >= b for b in bounds)


@SCHEDULES.register("cosine")
def _cosine(cfg: ScheduleConfig, total: int, base_lr: float) -> Factor:
    low = cfg.min_lr / base_lr

    def factor(step: int) -> float:
        t = min(max(step, 0), total) / max(total, 1)
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


@SCHEDULES.register("clr")
def _clr(cfg: ScheduleConfig, total: int, base_lr: float) -> Factor:
    high = (cfg.max_lr or base_lr) / base_lr
    low = cfg.min_lr / base_lr if cfg.min_lr > 0 else high / 10.0
    cyc_steps = max(1, round(total * (1.0 - cfg.annihilation)))
    period = cyc_steps / cfg.cycles
    end = low / 100.0

    def factor(step: int) -> float:
        if step < cyc_steps:
            phase = (step % period) / period  # 0..1 within one triangle
            return low + (high - low) * (1.0 - abs(2.0 * phase - 1.0))
        tail = max(total - cyc_steps, 1)
        return low + (end - low) * min((step - cyc_steps) / tail, 1.0)

    return factor


@SCHEDULES.register("onecycle")
def _onecycle(cfg: ScheduleConfig, total: int, base_lr: float) -> Factor:
    """The values of torch's two-phase `OneCycleLR` (div_factor 25, final_div_factor 1e4)."""
    high = (cfg.max_lr or base_lr) / base_lr
    start, end = high / 25.0, high / 25.0 / 1e4
    total = max(total, 2)
    peak = float(cfg.pct_start * total) - 1.0

    def cos(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def factor(step: int) -> float:
        if step <= peak and peak > 0:
            return cos(start, high, step / peak)
        return cos(high, end, (step - peak) / (total - 1 - peak))

    return factor


def schedule_factor(
    cfg: ScheduleConfig, total: int, base_lr: float, steps_per_epoch: int = 1
) -> Factor:
    """The LR multiplier at each step, warmup included (`onecycle` has no warmup)."""
    body = SCHEDULES.get(cfg.name)
    if cfg.name == "onecycle":
        return body(cfg, total, base_lr)
    warm = _warmup(cfg, total, steps_per_epoch)
    inner = body(cfg, max(total - warm, 1), base_lr)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return inner(step - warm)

    return factor


def lr_at(
    cfg: ScheduleConfig, total: int, base_lr: float, step: int, steps_per_epoch: int = 1
) -> float:
    """The learning rate at `step` (for plots and tests)."""
    return base_lr * schedule_factor(cfg, total, base_lr, steps_per_epoch)(step)


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    total_steps: int,
    steps_per_epoch: int = 1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-iteration scheduler for `optimizer` (its first group's LR is the base)."""
    base_lr = optimizer.param_groups[0]["lr"]
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.max_lr or base_lr,
            total_steps=max(total_steps, 2),
            pct_start=cfg.pct_start,
            cycle_momentum=False,
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule_factor(cfg, total_steps, base_lr, steps_per_epoch)
    )
