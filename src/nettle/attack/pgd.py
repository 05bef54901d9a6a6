"""PGD (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks",
arXiv:1706.06083) in L-infinity and L2, and BIM (Kurakin, Goodfellow & Bengio 2017,
"Adversarial examples in the physical world", arXiv:1607.02533).

Threat model: white-box, perturbation inside the `norm` ball of radius `eps` around the input
and inside the valid range. `steps` steps of size `alpha` on the cross-entropy (the sign of the
gradient for Linf, the per-example L2-normalised gradient for L2), each followed by projection
onto the ball and clipping to the range; targeted runs descend the cross-entropy to the target.
Any model's objective (`loss_fn`, `success_fn`) replaces the cross-entropy and the
misclassification; `eot_iter` averages each gradient over a randomised model's passes.
`random_start` starts uniformly inside the ball (Linf: uniform per coordinate; L2: uniform in
the ball, radius `eps * U^(1/d)`). With `restarts > 1` the attack is repeated on the examples
not yet fooled and, per example, the first successful (else the highest-loss) result is kept.
BIM is PGD-Linf from the input itself with the paper's defaults: `alpha = 1/255` and
`steps = min(255*eps + 4, 1.25 * 255*eps)`.
Shapes: x (N, ...) in the valid range, y (N,) class indices, target (N,) or None.

Defaults: Linf `eps = 8/255, alpha = 2/255` (Madry's CIFAR-10 setting, torchattacks `PGD`);
L2 `eps = 1.0, alpha = 0.2` (torchattacks `PGDL2`); 10 steps, random start, 1 restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nettle.attack.base import ATTACKS, Attack, per_example_norm, project

__all__ = ["BIM", "PGD", "BIMConfig", "PGDConfig"]

_DEFAULTS = {"linf": (8 / 255, 2 / 255), "l2": (1.0, 0.2)}


@dataclass
class PGDConfig:
    """PGD options; `eps` and `alpha` default by `norm` (see the module docstring)."""

    eps: float | None = None
    alpha: float | None = None
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.norm not in _DEFAULTS:
            raise ValueError(f"PGD norm must be 'linf' or 'l2', got {self.norm!r}")
        eps, alpha = _DEFAULTS[self.norm]
        self.eps = eps if self.eps is None else float(self.eps)
        self.alpha = alpha if self.alpha is None else float(self.alpha)
        if self.eps < 0 or self.alpha < 0:
            raise ValueError(f"PGD eps and alpha must be >= 0, got {self.eps}, {self.alpha}")
        if self.steps < 0 or self.restarts < 1:
            raise ValueError(f"PGD needs steps >= 0 and restarts >= 1, got {self}")


@dataclass
class BIMConfig:
    """BIM options; `steps=None` means the paper's `min(255*eps + 4, 1.25 * 255*eps)`."""

    eps: float = 8 / 255
    alpha: float = 1 / 255
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps is None:
            self.steps = max(1, math.floor(min(self.eps * 255 + 4, 1.25 * self.eps * 255)))


@ATTACKS.register("pgd")
class PGD(Attack):
    """Projected gradient descent (ascent on the loss), Linf or L2, with restarts."""

    Config = PGDConfig

    @property
    def settings(self) -> PGDConfig:
        """The PGD settings this attack runs with."""
        return self.config

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if not s.random_start or s.eps == 0:
            return torch.zeros_like(x)
        g = self.generator
        if s.norm == "linf":
            u = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
            return (2 * u - 1) * s.eps
        direction = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        direction = direction / (per_example_norm(direction, "l2") + 1e-12)
        r = torch.rand(x.shape[0], generator=g, device=x.device, dtype=x.dtype)
        radius = s.eps * r.pow(1.0 / x[0].numel())
        return direction * radius.view(-1, *([1] * (x.dim() - 1)))

    def _run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        s = self.settings
        lo, hi = self.clip
        adv = (x + self._start(x)).clamp(lo, hi)
        for _ in range(s.steps):
            grad, _ = self.input_grad(adv, y, target)
            if s.norm == "linf":  # Madry et al.'s (and torchattacks') arithmetic, in place
                adv = adv.add_(grad.sign_(), alpha=s.alpha).sub_(x).clamp_(-s.eps, s.eps)
                adv = adv.add_(x).clamp_(lo, hi)
            else:
                step = grad / (per_example_norm(grad, "l2") + 1e-12)
                adv = (x + project(adv + s.alpha * step - x, s.eps, "l2")).clamp(lo, hi)
        return adv

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        s = self.settings
        best = self._run(x, y, target)
        self.record(steps=s.steps, restarts=1, gradients=s.steps * len(x))
        if s.restarts == 1:
            return best
        with torch.no_grad():
            best_loss, found, best_out = self._score(best, y, target)
        gradients = s.steps * len(x)
        for r in range(1, s.restarts):
            todo = (~found).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            tt = target[todo] if target is not None else None
            adv = self._run(x[todo], y[todo], tt)
            gradients += s.steps * len(todo)
            with torch.no_grad():
                loss, fooled, out = self._score(adv, y[todo], tt)
            take = fooled | (loss > best_loss[todo])
            idx = todo[take]
            best[idx], best_loss[idx], found[idx] = adv[take], loss[take], fooled[take]
            best_out[idx] = out[take].to(best_out.dtype)
            self.record(restarts=r + 1, gradients=gradients)
        self.scored(best, best_out)  # every kept example was scored: no extra forward
        return best

    def _score(
        self, adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, success, output) of the examples `adv`, one forward pass."""
        output = self.forward(adv)
        return self.loss(output, y, target), self.success(output, y, target), output


@ATTACKS.register("bim")
class BIM(PGD):
    """Basic iterative method: PGD-Linf from the input itself (no random start)."""

    Config = BIMConfig

    def __init__(
        self,
        model: nn.Module,
        clip: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        **config: Any,
    ) -> None:
        super().__init__(model, clip, seed, **config)
        c = self.config
        self._settings = PGDConfig(c.eps, c.alpha, c.steps, "linf", False, 1)

    @property
    def settings(self) -> PGDConfig:
        return self._settings
