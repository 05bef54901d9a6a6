"""MaxConfidence (Goodfellow, Qin & Berthelot, "Evaluation methodology for attacks against
confidence thresholding models", openreview H1g0piA9tQ; cleverhans v3.1).

Threat model: white-box, L-infinity ball of radius `eps`. For every wrong class, a targeted PGD
maximises that class's probability; per example the adversarial input with the most confident
wrong prediction is kept. Batched over examples and classes at once (N*(K-1) rows), chunked by
`chunk` to bound memory. Only untargeted (it searches every target itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack
from nettle.attack.pgd import PGD

__all__ = ["MaxConfidence", "MaxConfidenceConfig"]


@dataclass
class MaxConfidenceConfig:
    eps: float = 0.3
    alpha: float = 0.1
    steps: int = 5
    random_start: bool = True
    chunk: int = 4096


@ATTACKS.register("maxconf")
class MaxConfidence(Attack):
    """Most confident wrong prediction over targeted PGD runs to every wrong class."""

    Config = MaxConfidenceConfig
    targeted_supported = False

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        with torch.no_grad():
            k = self.model(x[:1]).shape[1]
        n = x.shape[0]
        classes = torch.arange(k, device=x.device).expand(n, k)
        wrong = classes[classes != y[:, None]].view(n, k - 1)  # (N, K-1)
        xs = x.repeat_interleave(k - 1, 0)
        ts = wrong.reshape(-1)
        pgd = PGD(
            self.model,
            self.clip,
            None,
            eps=c.eps,
            alpha=c.alpha,
            steps=c.steps,
            random_start=c.random_start,
        )
        pgd.generator = self.generator
        advs, confs = [], []
        for i in range(0, len(xs), c.chunk):
            xa, ta = xs[i : i + c.chunk], ts[i : i + c.chunk]
            adv = pgd.perturb(xa, ta, ta)  # y is unused in targeted mode
            with torch.no_grad():
                probs = self.model(adv).softmax(1)
            advs.append(adv)
            confs.append(probs.gather(1, ta[:, None]).squeeze(1))
        adv = torch.cat(advs).view(n, k - 1, *x.shape[1:])
        best = torch.cat(confs).view(n, k - 1).argmax(1)
        return adv[torch.arange(n, device=x.device), best]
