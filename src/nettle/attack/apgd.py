"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", arXiv:2003.01690), with the CE and DLR losses.

Threat model: white-box, L-infinity or L2 ball of radius `eps`. Gradient ascent with momentum
(0.75) whose step size starts at `2*eps` and is halved at checkpoints p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (fractions of `steps`) when, since the last
checkpoint, the loss rose in less than 75% of the steps, or when neither the step size nor the
best loss changed; after a halving the iterate restarts from the best point so far. The
best-loss point per example is returned. `restarts` repeats from random starts keeping, per
example, the first success. DLR: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nettle.attack.base import ATTACKS, Attack
from nettle.attack.pgd import project

__all__ = ["APGD", "APGDConfig", "checkpoints", "dlr_loss"]


@dataclass
class APGDConfig:
    eps: float = 8 / 255
    steps: int = 100
    norm: str = "linf"
    loss: str = "ce"
    restarts: int = 1
    rho: float = 0.75


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss per example (to maximise)."""
    srt = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = (logits.argmax(1) == y).float()
    other = srt[:, -2] * top_is_y + srt[:, -1] * (1 - top_is_y)
    return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """The iterations at which the step size may be halved."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({round(q * steps) for q in p[1:] if q <= 1})


def _norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


@ATTACKS.register("apgd")
class APGD(Attack):
    """Auto-PGD with the parameter-free step-size schedule."""

    Config = APGDConfig
    targeted_supported = False

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "dlr":
            return dlr_loss(logits, y)
        return F.cross_entropy(logits, y, reduction="none")

    def _grad(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        logits = self.model(x)
        loss = self._loss(logits, y)
        (g,) = torch.autograd.grad(loss.sum(), x)
        return g, loss.detach(), logits.detach()

    def _step(
        self, x: torch.Tensor, point: torch.Tensor, g: torch.Tensor, eta: torch.Tensor
    ) -> torch.Tensor:
        c = self.config
        lo, hi = self.clip
        direction = g.sign() if c.norm == "linf" else g / (_norm(g) + 1e-12)
        z = point + eta * direction
        return (x + project(z - x, c.eps, c.norm)).clamp(lo, hi)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        lo, hi = self.clip
        view = (-1, *([1] * (x.dim() - 1)))
        if c.norm == "linf":
            u = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            start = (x + (2 * u - 1) * c.eps).clamp(lo, hi)
        else:
            r = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            start = (x + r / (_norm(r) + 1e-12) * c.eps * 0.5).clamp(lo, hi)
        eta = torch.full((x.shape[0],) + (1,) * (x.dim() - 1), 2 * c.eps, device=x.device)
        g, loss, logits = self._grad(start, y)
        best_x, best_loss = start.clone(), loss.clone()
        fooled = logits.argmax(1) != y
        prev, cur = start, self._step(x, start, g, eta)
        marks = set(checkpoints(c.steps))
        last_mark, increases = 0, torch.zeros_like(loss)
        eta_at_mark, best_at_mark = eta.clone(), best_loss.clone()
        for k in range(1, c.steps):
            g, loss, logits = self._grad(cur, y)
            fooled |= logits.argmax(1) != y
            increases += (loss > best_loss).float()
            better = loss > best_loss
            best_x = torch.where(better.view(view), cur, best_x)
            best_loss = torch.where(better, loss, best_loss)
            z = self._step(x, cur, g, eta)
            momentum = 0.75 if k > 1 else 1.0
            nxt = cur + momentum * (z - cur) + (1 - momentum) * (cur - prev)
            nxt = (x + project(nxt - x, c.eps, c.norm)).clamp(lo, hi)
            prev, cur = cur, nxt
            if k in marks:
                span = k - last_mark
                cond1 = increases < c.rho * span
                cond2 = (eta.flatten() == eta_at_mark.flatten()) & (best_loss == best_at_mark)
                halve = (cond1 | cond2).view(view)
                eta = torch.where(halve, eta / 2, eta)
                cur = torch.where(halve, best_x, cur)
                last_mark, increases = k, torch.zeros_like(loss)
                eta_at_mark, best_at_mark = eta.clone(), best_loss.clone()
        return best_x, fooled

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if self.config.norm not in ("linf", "l2") or self.config.loss not in ("ce", "dlr"):
            raise ValueError("APGD norm must be linf or l2 and loss ce or dlr")
        best, found = self._run(x, y)
        view = (-1, *([1] * (x.dim() - 1)))
        for _ in range(self.config.restarts - 1):
            adv, fooled = self._run(x, y)
            take = ~found & fooled
            best = torch.where(take.view(view), adv, best)
            found |= fooled
        return best
