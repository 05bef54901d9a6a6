"""The objectives a run can train with, one builder per config section.

`OBJECTIVES` maps a section name to an `ObjectiveEntry`: `when(cfg)` says whether the section
is on, and `build(cfg, model, train_set, device)` returns the objective (see
`nettle.train.objectives`) and a dict of facts for the run's summary (e.g. which teacher was
loaded). The config refuses sections that cannot be trained together
(`nettle.config.section_clash`), so at most one entry is on; plain cross-entropy ("ce") is
the default when none is.

This module registers the trainer's own objectives ("ce", "ctc", "seq2seq", "detection",
"logic", "adversarial");
`nettle.compress.objectives` registers "distill" and "bayes", and
`nettle.experiment.objective.build_objective` imports both and picks the one that is on.

Example:
    >>> @register_objective("mine", when=lambda cfg: cfg.train.loss == "mine")
    ... def build_mine(cfg, model, train_set, device):
    ...     return MyObjective(), {}  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from nettle.config import ExperimentConfig
from nettle.registry import Registry
from nettle.train.adversarial import create_adversarial
from nettle.train.ctc import CTCObjective
from nettle.train.detection import DetectionObjective
from nettle.train.logic_objective import LogicObjective, needs_logic_objective
from nettle.train.objectives import CrossEntropy, Objective
from nettle.train.seq2seq import Seq2SeqObjective

__all__ = [
    "DEFAULT_OBJECTIVE",
    "OBJECTIVES",
    "ObjectiveBuilder",
    "ObjectiveEntry",
    "register_objective",
    "sections_on",
]

ObjectiveBuilder = Callable[
    [ExperimentConfig, nn.Module, Dataset, torch.device], tuple[Objective, dict[str, Any]]
]
"""`(cfg, model, train_set, device) -> (objective, facts for the run's summary)`."""


@dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective: when its config section is on, and how to build it."""

    name: str
    when: Callable[[ExperimentConfig], bool] | None
    build: ObjectiveBuilder


OBJECTIVES: Registry[ObjectiveEntry] = Registry("objective")

DEFAULT_OBJECTIVE = "ce"
"""The entry used when no other section is on."""


def register_objective(
    name: str, when: Callable[[ExperimentConfig], bool] | None
) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Register a builder under `name`, used when `when(cfg)` is true; returns the builder.

    `when=None` registers the default, used when no other section is on.
    """

    def decorator(build: ObjectiveBuilder) -> ObjectiveBuilder:
        OBJECTIVES.add(name, ObjectiveEntry(name, when, build))
        return build

    return decorator


def sections_on(cfg: ExperimentConfig) -> list[str]:
    """The names of the registered objectives whose section `cfg` turns on (sorted)."""
    entries = [OBJECTIVES.get(n) for n in OBJECTIVES]
    return [e.name for e in entries if e.when is not None and e.when(cfg)]


@register_objective(DEFAULT_OBJECTIVE, when=None)
def build_cross_entropy(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """Cross-entropy with `train.label_smoothing` (and a model's auxiliary head)."""
    return CrossEntropy(cfg.train.label_smoothing), {}


@register_objective("ctc", when=lambda cfg: cfg.train.loss == "ctc")
def build_ctc(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """CTC loss of a sequence model (`train.loss: ctc`)."""
    return CTCObjective(), {}


@register_objective("seq2seq", when=lambda cfg: cfg.train.loss == "seq2seq")
def build_seq2seq(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """Teacher-forced cross-entropy of an attention recogniser (`train.loss: seq2seq`)."""
    return Seq2SeqObjective(), {}


@register_objective("detection", when=lambda cfg: cfg.train.loss == "detection")
def build_detection(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """The single-stage detector's loss (`train.loss: detection`)."""
    return DetectionObjective(), {}


@register_objective(
    "logic",
    when=lambda cfg: (
        cfg.train.loss not in ("ctc", "seq2seq", "detection") and needs_logic_objective(cfg.train)
    ),
)
def build_logic(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """Sigmoid losses, logic regularisers and negatives (`train.loss`, `strictening`,
    `regularizer`, `negatives`; sigmoid outputs with `model.output: sigmoid`)."""
    return LogicObjective(cfg.train, probabilities=cfg.model.output == "sigmoid"), {}


@register_objective("adversarial", when=lambda cfg: cfg.adversarial is not None)
def build_adversarial(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[Objective, dict[str, Any]]:
    """Adversarial training (the `adversarial:` section)."""
    return create_adversarial(cfg.adversarial, cfg.train.seed), {}
