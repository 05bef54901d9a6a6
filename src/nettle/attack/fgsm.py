"""FGSM (Goodfellow, Shlens & Szegedy 2015, arXiv:1412.6572).

Threat model: white-box, L-infinity ball of radius `eps`, one gradient step
`x + eps * sign(grad)` (targeted: descend the loss to the target). Inputs (N, ...) in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack

__all__ = ["FGSM", "FGSMConfig"]


@dataclass
class FGSMConfig:
    eps: float = 8 / 255


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method."""

    Config = FGSMConfig

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        grad, _ = self.input_grad(x, y, target)
        return x + self.config.eps * grad.sign()
