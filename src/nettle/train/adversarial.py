"""Adversarial training objectives (inputs in [0, 1], L-infinity ball of radius `eps`).

- `madry` (Madry et al. 2018, arXiv:1706.06083): train on PGD-k examples from a random start,
  generated with the model in eval mode (batch-norm statistics untouched), step `eps/4`.
- `fast` (Wong, Rice & Kolter 2020, arXiv:2001.03994): one FGSM step of `1.25*eps` from a
  uniform random start, projected back to the ball; as in the paper's code, the gradient is
  taken in training mode (batch statistics) and the start is clipped to the valid range first.

Both generate their examples with the one PGD of `nettle.attack` (`create_attack("pgd")`,
without its scoring pass), drawing the random starts from the objective's own generator, whose
state is saved in checkpoints.
- `free` (Shafahi et al. 2019, arXiv:1904.12843): each minibatch is replayed `replays` times;
  every replay's single backward pass gives both the parameter gradient and the input gradient,
  and the perturbation is carried over between replays and minibatches (the replay memory), so
  the attack costs almost nothing extra. The Trainer runs `replays` optimiser steps per batch.

The time spent generating examples is the "attack" phase of the step breakdown.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nettle.attack.base import create_attack
from nettle.config import AdversarialConfig
from nettle.measure.timing import PhaseTimer
from nettle.train.objectives import LossOutput

__all__ = ["FastFGSM", "FreeAdversarial", "MadryPGD", "create_adversarial"]


class _Base:
    def __init__(self, cfg: AdversarialConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self._gen: torch.Generator | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed + 7)
        return self._gen

    def _pgd(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        alpha: float,
        steps: int,
        keep_mode: bool = False,
    ) -> torch.Tensor:
        """PGD-`steps` examples from a uniform start drawn from this objective's generator."""
        attack = create_attack(
            "pgd",
            model,
            generator=self._generator(x.device),
            keep_mode=keep_mode,
            eps=self.cfg.eps,
            alpha=alpha,
            steps=steps,
            random_start=True,
        )
        return attack.generate(x, y)

    def _train_on(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("forward"):
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y)
        return LossOutput(loss, logits)

    def extra_state(self) -> dict[str, Any]:
        return {"generator": self._gen.get_state() if self._gen is not None else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("generator") is not None:
            self._gen = torch.Generator()
            self._gen.set_state(state["generator"].cpu())


class MadryPGD(_Base):
    """Train on PGD examples (random start, `steps` steps of `alpha`, default eps/4)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        alpha = self.cfg.alpha or self.cfg.eps / 4
        with timer.phase("attack"):
            adv = self._pgd(model, x, y, alpha, self.cfg.steps)
        return self._train_on(model, adv, y, timer)


class FastFGSM(_Base):
    """Train on one FGSM step of `alpha` (default 1.25*eps) from a uniform random start."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        alpha = self.cfg.alpha or 1.25 * self.cfg.eps
        with timer.phase("attack"):
            adv = self._pgd(model, x, y, alpha, 1, keep_mode=True)
        return self._train_on(model, adv, y, timer)


class FreeAdversarial(_Base):
    """Replay each minibatch `replays` times, carrying the perturbation (see module doc)."""

    def __init__(self, cfg: AdversarialConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.replays = cfg.replays
        self.delta: torch.Tensor | None = None
        self._leaf: torch.Tensor | None = None
        self._x: torch.Tensor | None = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("attack"):
            if self.delta is None or self.delta.shape[1:] != x.shape[1:]:
                self.delta = torch.zeros_like(x)
            if self.delta.shape[0] < x.shape[0]:
                pad = torch.zeros_like(x[: x.shape[0] - self.delta.shape[0]])
                self.delta = torch.cat([self.delta, pad])
            delta = self.delta[: x.shape[0]]
            self._x = x
            self._leaf = (x + delta).clamp(0, 1).detach().requires_grad_(True)
        return self._train_on(model, self._leaf, y, timer)

    def after_step(self, model: nn.Module) -> None:
        """After the shared backward: step the perturbation with the input gradient."""
        if self._leaf is None or self._leaf.grad is None:
            return
        eps, alpha = self.cfg.eps, self.cfg.alpha or self.cfg.eps
        n = self._leaf.shape[0]
        new = (self._leaf.detach() - self._x + alpha * self._leaf.grad.sign()).clamp(-eps, eps)
        self.delta = torch.cat([new, self.delta[n:]]) if self.delta.shape[0] > n else new
        self._leaf = None

    def extra_state(self) -> dict[str, Any]:
        return super().extra_state() | {"delta": self.delta}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.delta = state.get("delta")


def create_adversarial(cfg: AdversarialConfig, seed: int = 0) -> _Base:
    """The objective of adversarial-training mode `cfg.mode`."""
    return {"madry": MadryPGD, "fast": FastFGSM, "free": FreeAdversarial}[cfg.mode](cfg, seed)
