"""APGD-T, the targeted-DLR APGD of AutoAttack (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", ICML 2020,
arXiv:2003.01690).

Threat model: white-box, untargeted: an example counts as fooled when the model no longer
predicts its label. For each of the `targets` classes the clean input scores highest after the
label's rank (second, third, ... largest logit), APGD (see `nettle.attack.apgd`) ascends the
targeted DLR loss `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)` from a fresh random
start, `restarts` times, each run only on the examples that no earlier target or restart fooled.
Per example the first point that fooled the model is returned, else the input itself (as the
reference). With fewer than `targets + 1` classes every other class is targeted once.
Shapes: x (N, ...) in the valid range, y (N,) class indices; no user targets.

Gradients go through the base class's `loss_grad` (`Attack.loss` is the targeted DLR here), so
`eot_iter` averages them over a randomised model's passes; `loss_fn`/`success_fn` do not apply
(the loss reads the logits).

Defaults: AutoAttack's "standard" APGD-T: 9 targets, 1 restart per target, 100 iterations,
rho 0.75, `eps = 8/255` (L-infinity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.apgd import APGD, dlr_loss
from nettle.attack.base import ATTACKS

__all__ = ["APGDT", "APGDTConfig", "top_targets"]


@dataclass
class APGDTConfig:
    """APGD-T options."""

    eps: float = 8 / 255
    steps: int = 100
    norm: str = "linf"
    targets: int = 9
    restarts: int = 1
    rho: float = 0.75

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"APGD-T norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.eps < 0 or self.steps < 1 or self.restarts < 1 or self.targets < 1:
            raise ValueError(
                f"APGD-T needs eps >= 0, steps >= 1, restarts >= 1, targets >= 1, got {self}"
            )


def top_targets(logits: torch.Tensor, rank: int) -> torch.Tensor:
    """The class with the `rank`-th largest logit per example (rank 2 = runner-up), shape (N,)."""
    return logits.sort(dim=1).indices[:, -rank]


@ATTACKS.register("apgd-t")
class APGDT(APGD):
    """APGD on the targeted DLR loss over the top-k other classes; untargeted success."""

    Config = APGDTConfig
    targeted_supported = False
    any_objective = False  # the targeted DLR loss reads the logits

    def fooled(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return self.success(logits, y, None)  # untargeted, whatever class it was pushed to

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return dlr_loss(logits, y, target)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        adv = x.clone()
        with torch.no_grad():
            logits = self.forward(x)
        if logits.shape[1] < 4:
            raise ValueError("APGD-T needs at least 4 classes (its DLR loss uses the 4th logit)")
        robust = logits.argmax(1) == y
        targets = min(c.targets, logits.shape[1] - 1)
        gradients = 0
        for rank in range(2, targets + 2):
            for _ in range(c.restarts):
                todo = robust.nonzero().squeeze(1)
                if len(todo) == 0:
                    break
                goal = top_targets(logits[todo], rank)
                found, fooled, _ = self._run(x[todo], y[todo], goal)
                gradients += (c.steps + 1) * len(todo)
                adv[todo[fooled]] = found[fooled]
                robust[todo[fooled]] = False
        self.record(steps=c.steps, targets=targets, gradients=gradients)
        return adv
