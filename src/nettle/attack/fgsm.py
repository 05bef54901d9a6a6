"""FGSM (Goodfellow, Shlens & Szegedy 2015, "Explaining and harnessing adversarial examples",
arXiv:1412.6572).

Threat model: white-box, L-infinity ball of radius `eps`, one step `x + eps * sign(grad)` on the
cross-entropy to the label (targeted: `x - eps * sign(grad)` of the cross-entropy to the
target), clipped to the valid range. Shapes: x (N, ...) in the valid range, y (N,) class
indices, target (N,) or None. Default `eps = 8/255` (torchattacks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack

__all__ = ["FGSM", "FGSMConfig"]


@dataclass
class FGSMConfig:
    """FGSM options."""

    eps: float = 8 / 255

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise ValueError(f"FGSM eps must be >= 0, got {self.eps}")


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method."""

    Config = FGSMConfig

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        grad, _ = self.input_grad(x, y, target)
        self.record(steps=1, gradients=len(x))
        return x + self.config.eps * grad.sign()
