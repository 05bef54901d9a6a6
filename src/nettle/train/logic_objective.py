"""The objective of logic-inspired models: sigmoid outputs, strictening, open-world negatives.

Selected by `train.loss` (`sigmoid_mse` or `bce`: every class an independent proposition),
`train.strictening` (weight of `nettle.nn.logic_losses.strictening_penalty`) and
`train.negatives` (`scramble` or `overlay`: a fraction of the batch is turned into inputs that
belong to no class, trained towards an all-zero target). Accuracy is measured on the real
examples only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.config import TrainConfig
from nettle.measure.timing import PhaseTimer
from nettle.nn.logic_losses import sigmoid_mse_loss, strictening_penalty, to_multi_hot
from nettle.train.negatives import overlay, scramble
from nettle.train.objectives import LossOutput

__all__ = ["LogicObjective", "needs_logic_objective"]


def needs_logic_objective(cfg: TrainConfig) -> bool:
    """Whether `cfg` asks for anything beyond plain cross-entropy."""
    return cfg.loss != "ce" or cfg.strictening > 0 or bool(cfg.negatives)


class LogicObjective:
    """Sigmoid-MSE/BCE or CE, plus strictening, plus open-world negatives."""

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.negatives and cfg.loss == "ce":
            raise ValueError(
                "train.negatives needs train.loss sigmoid_mse or bce (an all-zero target)"
            )
        self.cfg = cfg
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
            if self.cfg.loss == "sigmoid_mse":
                loss = sigmoid_mse_loss(logits, target)
            elif self.cfg.loss == "bce":
                loss = F.binary_cross_entropy_with_logits(logits, target)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
            parts["task"] = loss.detach()
            if self.cfg.strictening:
                penalty = strictening_penalty(model)
                loss = loss + self.cfg.strictening * penalty
                parts["strictening"] = penalty.detach()
        return LossOutput(loss, logits[: len(x)], parts)
