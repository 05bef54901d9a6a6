"""Adversarial training objectives (inputs in [0, 1], L-infinity ball of radius `eps`).

- `madry` (Madry et al. 2018, arXiv:1706.06083): train on PGD-k examples from a random start,
  generated with the model in eval mode (batch-norm statistics untouched), step `eps/4`.
- `fast` (Wong, Rice & Kolter 2020, arXiv:2001.03994): one FGSM step of `1.25*eps` from a
  uniform random start, projected back to the ball.
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

from nettle.config import AdversarialConfig
from nettle.measure.timing import PhaseTimer
from nettle.train.objectives import LossOutput

__all__ = ["FastFGSM", "FreeAdversarial", "MadryPGD", "create_adversarial"]


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return grad


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

    def _uniform(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.cfg.eps

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
        eps, steps = self.cfg.eps, self.cfg.steps
        alpha = self.cfg.alpha or eps / 4
        with timer.phase("attack"):
            was = model.training
            model.eval()
            adv = (x + self._uniform(x)).clamp(0, 1)
            for _ in range(steps):
                grad = _input_grad(model, adv, y)
                adv = (x + (adv + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1).detach()
            model.train(was)
        return self._train_on(model, adv, y, timer)


class FastFGSM(_Base):
    """Train on one FGSM step of `alpha` (default 1.25*eps) from a uniform random start."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        eps = self.cfg.eps
        alpha = self.cfg.alpha or 1.25 * eps
        with timer.phase("attack"):
            delta = self._uniform(x)
            grad = _input_grad(model, (x + delta).clamp(0, 1), y)
            delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            adv = (x + delta).clamp(0, 1).detach()
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
