"""The compression objectives of a run: distillation from a teacher and Bayesian training.

Registered in `nettle.train.objective_registry.OBJECTIVES` as "distill" (the `distill:`
section) and "bayes" (the `bayes:` section). The losses themselves live in
`nettle.compress.distill` and `nettle.compress.bayes`; this module loads what they need (the
teacher, its weights) from the config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from nettle.compress.bayes import BayesObjective
from nettle.compress.distill import DistillObjective
from nettle.compress.substitute import load_matching
from nettle.config import ExperimentConfig
from nettle.models.build import load_teacher
from nettle.train.objective_registry import register_objective

__all__ = ["build_bayes", "build_distill"]


@register_objective("distill", when=lambda cfg: cfg.distill is not None)
def build_distill(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[DistillObjective, dict[str, Any]]:
    """Attention transfer (and KD) from `distill.teacher` at the student's `at_layers`.

    With `distill.load_weights` the student first takes every teacher weight whose name and
    shape match (`load_matching`).

    Raises:
        ValueError: the student sets no attention points or the teacher lacks some of them.
    """
    dist = cfg.distill
    teacher = load_teacher(dist.teacher).to(device)
    layers = list(getattr(model, "at_layers", []))
    missing = [n for n in layers if n not in dict(teacher.named_modules())]
    if not layers or missing:
        raise ValueError(
            f"distill: the teacher lacks the student's attention points {missing or '(none set)'}"
        )
    info: dict[str, Any] = {"teacher": str(dist.teacher), "at_layers": layers}
    if dist.load_weights:
        report = load_matching(model, teacher.state_dict())
        info.update(
            loaded=len(report.loaded), not_loaded=report.shape_mismatch + report.missing_in_teacher
        )
    objective = DistillObjective(teacher, layers, dist.beta, dist.alpha, dist.temperature)
    return objective, {"distill": info}


@register_objective("bayes", when=lambda cfg: cfg.bayes is not None)
def build_bayes(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[BayesObjective, dict[str, Any]]:
    """Cross-entropy + KL / examples; its `final_report` prunes at `bayes.threshold`."""
    return BayesObjective(len(train_set), cfg.bayes.threshold), {}
