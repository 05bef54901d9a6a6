"""Resolving a config before it runs: budgets solved, cost counted without weights.

`resolve_budget(cfg)` turns `model.budget: {params: N}` (or `{macs: N}`) into the substitute
setting that meets it, with the solver of `nettle count --budget`
(`nettle.compress.budget.solve_budget`), and records the setting and what it achieves in the
config, so the run's id and its `config.yaml` name the exact network that trains.
`resolve_config` adds the pretrained weights' check and digest
(`nettle.models.build.resolve_weights`). `plan_cost(cfg)` counts parameters and multiply-adds of the config's model on the meta
device (no memory, no weights), which is how `nettle sweep plan` shows every run's cost
before anything trains.
"""

from __future__ import annotations

from typing import Any

import torch

from nettle.config import ConfigError, ExperimentConfig
from nettle.models.build import build_model, resolve_weights
from nettle.train.data import get_dataset_info

__all__ = ["input_shape", "plan_cost", "resolve_budget", "resolve_config"]


def input_shape(cfg: ExperimentConfig) -> tuple[int, ...]:
    """The shape of one input example: `evaluate.count.input`, else the data set's."""
    if cfg.evaluate.count is not None and cfg.evaluate.count.input:
        return tuple(cfg.evaluate.count.input)
    info = get_dataset_info(cfg.data.name, cfg.data.root, cfg.data.image_size)
    return (cfg.model.in_channels or info.in_channels, *info.image_size)


def _with_conv(cfg: ExperimentConfig, conv: str | None) -> ExperimentConfig:
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"conv": conv})})


def resolve_budget(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with `model.budget` solved into `model.conv` (unchanged without a budget or
    when already solved).

    Raises:
        ConfigError: the substitute cannot reach the budget (the message gives the closest).
    """
    from nettle.compress.budget import solve_budget

    budget = cfg.model.budget
    if budget is None or budget.setting is not None:
        return cfg
    metric = "params" if budget.params is not None else "macs"
    target = budget.params if budget.params is not None else budget.macs

    def build(conv: str) -> torch.nn.Module:
        with torch.device("meta"):
            return build_model(_with_conv(cfg, conv))

    try:
        result = solve_budget(build, str(cfg.model.conv), target, metric, input_shape(cfg))
    except ValueError as exc:
        raise ConfigError(f"model.budget: {exc}") from None
    if not result.reachable:
        raise ConfigError(
            f"model.budget: {cfg.model.conv} cannot reach {target:,.0f} {metric} on "
            f"{cfg.model.name}; the closest is {result.achieved:,} with {result.conv}"
        )
    solved = budget.model_copy(update={"setting": result.setting, "achieved": result.achieved})
    model = cfg.model.model_copy(update={"conv": result.conv, "budget": solved})
    return cfg.model_copy(update={"model": model})


def resolve_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Everything resolved when a run is planned: the budget's setting (`resolve_budget`),
    then the pretrained weights' digest after they are checked (`resolve_weights`)."""
    return resolve_weights(resolve_budget(cfg))


def plan_cost(cfg: ExperimentConfig) -> dict[str, Any]:
    """Parameters and multiply-adds of the config's model for one example (meta device)."""
    from nettle.measure import count

    with torch.device("meta"):
        model = build_model(cfg)
    convention = cfg.evaluate.count.convention if cfg.evaluate.count is not None else "default"
    report = count(model, input_shape(cfg), convention)
    return {"params": report.params, "macs": report.macs}
