"""The training objective of a run: the builder of the one config section that is on.

Every module that registers objectives in `OBJECTIVES` is imported here, so
`build_objective` knows them all. A new objective is a builder decorated with
`@register_objective(name, when=...)` in its own module, imported below.

Example:
    >>> objective, facts = build_objective(cfg, model, train_set, device)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

import nettle.compress.objectives  # noqa: F401  (registers distill, bayes)
from nettle.config import ConfigError, ExperimentConfig, section_clash
from nettle.train.objective_registry import DEFAULT_OBJECTIVE, OBJECTIVES, sections_on
from nettle.train.objectives import Objective

__all__ = ["build_objective", "objective_name"]


def objective_name(cfg: ExperimentConfig) -> str:
    """The name of the objective `cfg` trains with (`DEFAULT_OBJECTIVE` when no section is on).

    Raises:
        ConfigError: more than one objective's section is on.
    """
    on = sections_on(cfg)
    if len(on) > 1:
        raise ConfigError(section_clash(cfg) or f"{' and '.join(on)} cannot be combined")
    return on[0] if on else DEFAULT_OBJECTIVE


def build_objective(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """The objective of `cfg` and the facts its builder records in the run's summary.

    Builders may change `model` (distillation loads the teacher's matching weights), so call
    this before the optimiser is built.
    """
    objective, facts = OBJECTIVES.get(objective_name(cfg)).build(cfg, model, train_set, device)
    return objective, dict(facts)
