"""The objective of logic-inspired models: sigmoid outputs, strictening, open-world negatives.

Selected by `train.loss` (`sigmoid_mse` or `bce`: every class an independent proposition),
`train.strictening` (weight of `nettle.nn.logic_losses.strictening_penalty`),
`train.regularizer` with `train.regularizer_weight` (strictening, max-fit or max-margin, L1 or
L2: `nettle.nn.logic_losses.logic_regularizer`) and `train.negatives` (`scramble` or
`overlay`: a fraction of the batch is turned into inputs that belong to no class, trained
towards an all-zero target). Accuracy is measured on the real examples only.

A model built with `model.output: sigmoid` outputs probabilities: the sigmoid losses then
take them as they are (`probabilities=True`), without a second sigmoid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.config import TrainConfig
from nettle.measure.timing import PhaseTimer
from nettle.nn.logic_losses import (
    logic_regularizer,
    sigmoid_mse_loss,
    strictening_penalty,
    to_multi_hot,
)
from nettle.train.negatives import overlay, scramble
from nettle.train.objectives import LossOutput

__all__ = ["LogicObjective", "needs_logic_objective"]


def needs_logic_objective(cfg: TrainConfig) -> bool:
    """Whether `cfg` asks for anything beyond plain cross-entropy."""
    return cfg.loss != "ce" or cfg.strictening > 0 or bool(cfg.regularizer or cfg.negatives)


def _task_loss(
    loss: str, outputs: torch.Tensor, target: torch.Tensor, probabilities: bool
) -> torch.Tensor:
    """Sigmoid-MSE or BCE of outputs (logits, or probabilities) against a multi-hot target."""
    if loss == "sigmoid_mse":
        return sigmoid_mse_loss(outputs, target, probabilities=probabilities)
    if probabilities:
        return F.binary_cross_entropy(outputs.clamp(1e-7, 1 - 1e-7), target)
    return F.binary_cross_entropy_with_logits(outputs, target)


class LogicObjective:
    """Sigmoid-MSE/BCE or CE, plus a logic regulariser, plus open-world negatives.

    Args:
        cfg: the training section.
        probabilities: the model's outputs are sigmoid probabilities (`model.output: sigmoid`).
    """

    def __init__(self, cfg: TrainConfig, probabilities: bool = False) -> None:
        if cfg.negatives and cfg.loss == "ce":
            raise ValueError(
                "train.negatives needs train.loss sigmoid_mse or bce (an all-zero target)"
            )
        if probabilities and cfg.loss not in ("sigmoid_mse", "bce"):
            raise ValueError("a sigmoid output needs train.loss sigmoid_mse or bce")
        self.cfg, self.probabilities = cfg, probabilities
        self._gen: torch.Generator | None = None

    def _negatives(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device)
            self._gen.manual_seed(self.cfg.seed + 11)
        n = max(1, round(self.cfg.negatives_fraction * len(x)))
        if self.cfg.negatives == "scramble":
            return scramble(x[:n], self.cfg.negatives_block, self._gen)
        if bool((y == y[0]).all()):
            return x[:0]
        return overlay(x, y, self._gen)[:n]

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        parts: dict[str, torch.Tensor] = {}
        with timer.phase("data"):
            neg = self._negatives(x, y) if self.cfg.negatives else x[:0]
            inputs = torch.cat([x, neg]) if len(neg) else x
        with timer.phase("forward"):
            logits = model(inputs)
            classes = logits.shape[1]
            target = to_multi_hot(y, classes)
            if len(neg):
                target = torch.cat([target, torch.zeros(len(neg), classes, device=x.device)])
            if self.cfg.loss in ("sigmoid_mse", "bce"):
                loss = _task_loss(self.cfg.loss, logits, target, self.probabilities)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
            parts["task"] = loss.detach()
            if self.cfg.strictening:
                penalty = strictening_penalty(model)
                loss = loss + self.cfg.strictening * penalty
                parts["strictening"] = penalty.detach()
            if self.cfg.regularizer:
                penalty = logic_regularizer(model, self.cfg.regularizer)
                loss = loss + self.cfg.regularizer_weight * penalty
                parts[self.cfg.regularizer] = penalty.detach()
        return LossOutput(loss, logits[: len(x)], parts)
