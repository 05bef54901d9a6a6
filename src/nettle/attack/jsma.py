"""JSMA, the Jacobian-based saliency map attack (Papernot et al. 2016, "The limitations of deep
learning in adversarial settings", arXiv:1511.07528).

Threat model: white-box, L0: pairs of the D input features change (each feature once) by
`theta` (clipped to the valid range) while fewer than `gamma * D` have changed, so at most
`ceil(gamma * D / 2)` pairs (the paper's loop condition; torchattacks alike). Targeted;
an untargeted call aims at the most likely wrong class of the clean input. Each iteration takes
the gradients of the target logit (`alpha`) and of the sum of the other logits (`beta`) with
respect to the input, scores every pair (p, q) of features still in the search domain by
`(alpha_p + alpha_q) * |beta_p + beta_q|` under `alpha_p + alpha_q > 0` and
`beta_p + beta_q < 0` (signs flipped when `theta < 0`), and changes the best pair. Features
that changed leave the domain; an example stops when it reaches the target, runs out of
features or has no admissible pair. Batched over examples (only those still running); the
pair search is one vectorised (B, D, D) pass per chunk of examples, its size bounded by
`max_pair_elements` (about 10 bytes each), so 8x8 or 28x28 inputs run many examples per pass.
Shapes: x (N, ...) in the valid range, y (N,) class indices, target (N,) or None.

Defaults: `theta = 1.0, gamma = 0.1` (torchattacks; the paper used gamma = 0.145 on MNIST).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack

__all__ = ["JSMA", "JSMAConfig", "best_pairs"]


@dataclass
class JSMAConfig:
    """JSMA options."""

    theta: float = 1.0
    gamma: float = 0.1
    max_pair_elements: int = 2**24

    def __post_init__(self) -> None:
        if self.theta == 0 or not 0 < self.gamma <= 1 or self.max_pair_elements < 1:
            raise ValueError(f"JSMA needs theta != 0 and 0 < gamma <= 1, got {self}")


def best_pairs(
    alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor, max_elements: int = 2**24
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The most salient admissible feature pair per example.

    Args:
        alpha: (B, D) gradient of the target logit.
        beta: (B, D) gradient of the sum of the other logits.
        domain: (B, D) bool, features that may still change.
        max_elements: pair scores per pass; whole examples per pass, at least one.

    Returns:
        p, q: (B,) feature indices; found: (B,) bool, False where no pair is admissible.
    """
    b, d = alpha.shape
    per_pass = max(1, max_elements // (d * d))
    p, q, found = [], [], []
    for i in range(0, b, per_pass):
        a = alpha[i : i + per_pass].masked_fill(~domain[i : i + per_pass], float("-inf"))
        bb = beta[i : i + per_pass]
        sa = a[:, :, None] + a[:, None, :]  # (B, D, D); -inf off the domain
        sb = bb[:, :, None] + bb[:, None, :]
        ok = (sa > 0) & (sb < 0)
        score = sa.mul_(sb).neg_().masked_fill_(~ok, float("-inf"))  # a * |b| where admissible
        score.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        top, flat = score.flatten(1).max(1)
        p.append(flat // d)
        q.append(flat % d)
        found.append(top > float("-inf"))
    return torch.cat(p), torch.cat(q), torch.cat(found)


@ATTACKS.register("jsma")
class JSMA(Attack):
    """Saliency-map attack changing feature pairs towards a target class."""

    Config = JSMAConfig
    supports_eot = False
    any_objective = False  # saliency of class logits

    def _grads(
        self, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        logits = self.forward(x)
        (total,) = torch.autograd.grad(logits.sum(), x, retain_graph=True)
        (alpha,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
        self._counts["backwards"] += 2 * len(x)
        return alpha.flatten(1), (total - alpha).flatten(1), logits.detach()

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        lo, hi = self.clip
        if target is None:  # the most likely wrong class
            with torch.no_grad():
                target = self.forward(x).scatter(1, y[:, None], float("-inf")).argmax(1)
        adv = x.flatten(1).clone()  # (N, D)
        domain = adv < hi if c.theta > 0 else adv > lo
        running = torch.ones(len(x), dtype=torch.bool, device=x.device)
        iterations = 0
        for _ in range(math.ceil(c.gamma * adv.shape[1] / 2)):
            idx = running.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            iterations += 1
            alpha, beta, logits = self._grads(adv[idx].view(-1, *x.shape[1:]), target[idx])
            if c.theta < 0:  # decreasing features: the conditions flip sign
                alpha, beta = -alpha, -beta
            p, q, found = best_pairs(alpha, beta, domain[idx], c.max_pair_elements)
            go = found & (logits.argmax(1) != target[idx]) & (domain[idx].sum(1) >= 2)
            running[idx] = go
            rows = idx[go]
            for f in (p[go], q[go]):
                adv[rows, f] = (adv[rows, f] + c.theta).clamp(lo, hi)
                domain[rows, f] = False
        self.record(steps=iterations)
        return adv.view_as(x)
