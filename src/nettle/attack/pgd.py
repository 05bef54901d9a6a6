"""PGD (Madry et al. 2018, arXiv:1706.06083) in L-infinity and L2, and BIM (Kurakin et al.
2017, arXiv:1607.02533).

Threat model: white-box, perturbation inside the `norm` ball of radius `eps` around the input
and inside the valid range. `steps` steps of size `alpha` (sign of the gradient for Linf, the
per-example normalised gradient for L2), each followed by projection onto the ball and clipping
to the range. `random_start` starts uniformly inside the ball; with `restarts > 1` the attack is
repeated and, per example, the first successful (else the highest-loss) result is kept. BIM is
PGD-Linf without random start whose default steps are `min(eps*255 + 4, 1.25*eps*255)`.
Shapes: x (N, ...) in the valid range, y (N,) class indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack

__all__ = ["BIM", "PGD", "PGDConfig", "project"]


@dataclass
class PGDConfig:
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1


def _norms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations onto the `norm` ball of radius `eps` (per example)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * torch.clamp(eps / (_norms(delta) + 1e-12), max=1.0)


@ATTACKS.register("pgd")
class PGD(Attack):
    """Projected gradient descent (ascent on the loss), Linf or L2."""

    Config = PGDConfig

    def __init__(self, model, clip=(0.0, 1.0), seed=None, **config) -> None:
        super().__init__(model, clip, seed, **config)
        if self.config.norm not in ("linf", "l2"):
            raise ValueError(f"PGD norm must be 'linf' or 'l2', got {self.config.norm!r}")

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not c.random_start:
            return torch.zeros_like(x)
        if c.norm == "linf":
            u = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            return (2 * u - 1) * c.eps
        g = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        d = x[0].numel()
        r = torch.rand(x.shape[0], generator=self.generator, device=x.device, dtype=x.dtype)
        radius = c.eps * r.pow(1.0 / d).view(-1, *([1] * (x.dim() - 1)))
        return g / (_norms(g) + 1e-12) * radius

    def _run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        c = self.config
        lo, hi = self.clip
        adv = (x + self._start(x)).clamp(lo, hi)
        for _ in range(c.steps):
            grad, _ = self.input_grad(adv, y, target)
            if c.norm == "linf":
                step = c.alpha * grad.sign()
            else:
                step = c.alpha * grad / (_norms(grad) + 1e-12)
            adv = (x + project(adv + step - x, c.eps, c.norm)).clamp(lo, hi)
        return adv

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        best = self._run(x, y, target)
        if self.config.restarts <= 1:
            return best
        with torch.no_grad():
            logits = self.model(best)
            best_loss = self.loss(logits, y, target)
            found = self._fooled(logits, y, target)
        for _ in range(self.config.restarts - 1):
            adv = self._run(x, y, target)
            with torch.no_grad():
                logits = self.model(adv)
                loss = self.loss(logits, y, target)
                fooled = self._fooled(logits, y, target)
            better = ~found & (fooled | (loss > best_loss))
            shape = (-1, *([1] * (x.dim() - 1)))
            best = torch.where(better.view(shape), adv, best)
            best_loss = torch.where(better, loss, best_loss)
            found = found | fooled
        return best

    @staticmethod
    def _fooled(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y


@ATTACKS.register("bim")
class BIM(PGD):
    """Basic iterative method: PGD-Linf from the input itself (no random start)."""

    def __init__(self, model, clip=(0.0, 1.0), seed=None, **config) -> None:
        config.setdefault("random_start", False)
        config.setdefault("alpha", 1 / 255)
        eps = config.get("eps", PGDConfig.eps)
        config.setdefault("steps", max(1, math.floor(min(eps * 255 + 4, 1.25 * eps * 255))))
        super().__init__(model, clip, seed, **config)
