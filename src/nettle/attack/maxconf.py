"""MaxConfidence (Goodfellow, Qin & Berthelot 2019, "Evaluation methodology for attacks against
confidence thresholding models", openreview H1g0piA9tQ; cleverhans v3.1 `MaxConfidence`).

Threat model: white-box, L-infinity ball of radius `eps`, valid range. For every wrong class
`t` of an example, a targeted PGD (cross-entropy to `t`, `steps` steps of size `alpha`) raises
that class's confidence; each result is scored by its highest wrong-class probability
`max_k (p_k - onehot(y)_k)`, zero when it is still classified correctly, and per example the
highest-scoring result is kept: the most confident misclassification inside the ball. With an
optimal base attack this gives the optimal failure rate for every confidence threshold above
0.5. Batched over examples and classes at once (N * (K-1) rows; whole examples per pass, up to
`max_batch` rows). The run towards the true class that cleverhans also makes can never score
above zero and is skipped. Untargeted only (it searches every target itself).
Shapes: x (N, ...) in the valid range, y (N,) class indices.

Defaults: the base PGD of cleverhans' CIFAR-10 confidence reports: `eps = 8/255`,
`alpha = 2/255`, 40 steps, random start (MNIST reports use 0.3 / 0.1).
Extras: `confidence` (N,) the kept result's highest wrong-class probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack
from nettle.attack.pgd import PGD

__all__ = ["MaxConfidence", "MaxConfidenceConfig"]


@dataclass
class MaxConfidenceConfig:
    """MaxConfidence options (those of its base PGD, and the rows per pass)."""

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 40
    random_start: bool = True
    max_batch: int = 4096

    def __post_init__(self) -> None:
        if self.eps < 0 or self.alpha < 0 or self.steps < 0 or self.max_batch < 1:
            raise ValueError(f"MaxConfidence needs eps, alpha, steps >= 0, max_batch >= 1: {self}")


@ATTACKS.register("maxconf")
class MaxConfidence(Attack):
    """Most confident wrong prediction over targeted PGD runs towards every wrong class."""

    Config = MaxConfidenceConfig
    targeted_supported = False
    any_objective = False  # it searches over classes

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        with torch.no_grad():
            k = self.forward(x[:1]).shape[1]
        pgd = PGD(
            self.model,
            clip=self.clip,
            eot_iter=self.eot_iter,
            eps=c.eps,
            alpha=c.alpha,
            steps=c.steps,
            random_start=c.random_start,
        )
        pgd.generator, pgd._counts = self.generator, self._counts  # one stream, one count
        best, confidence = x.clone(), torch.zeros(len(x), device=x.device)
        best_out = torch.zeros(len(x), k, device=x.device)
        per_pass = max(1, c.max_batch // max(1, k - 1))  # whole examples per pass
        for i in range(0, len(x), per_pass):
            xa, ya = x[i : i + per_pass], y[i : i + per_pass]
            n = len(xa)
            others = torch.arange(k - 1, device=x.device).expand(n, k - 1)
            wrong = others + (others >= ya[:, None]).long()  # (n, K-1) the classes != y
            targets = wrong.reshape(-1)
            adv = pgd.perturb(xa.repeat_interleave(k - 1, 0), targets, targets)
            with torch.no_grad():
                logits = self.forward(adv).float().view(n, k - 1, k)
            probs = logits.softmax(2)
            rows_y = ya[:, None].expand(n, k - 1)
            wrong_prob = probs.scatter(2, rows_y[..., None], 0.0).amax(2)  # (n, K-1)
            score = torch.where(probs.argmax(2) == rows_y, 0.0, wrong_prob)
            top, pick = score.max(1)
            rows = torch.arange(n, device=x.device)
            best[i : i + n] = adv.view(n, k - 1, *x.shape[1:])[rows, pick]
            best_out[i : i + n] = logits[rows, pick]
            confidence[i : i + n] = top
        self.record(steps=c.steps, gradients=c.steps * len(x) * (k - 1), confidence=confidence)
        if k > 1:
            self.scored(best, best_out)  # the kept rows were scored: no extra forward
        return best
