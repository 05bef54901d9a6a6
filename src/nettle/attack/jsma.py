"""JSMA, the Jacobian-based saliency map attack (Papernot et al. 2016, arXiv:1511.07528).

Threat model: white-box, L0 (at most a fraction `gamma` of the input features change), each
chosen feature pair increased by `theta` (clipped to the valid range). Targeted; untargeted
calls aim at the most likely wrong class. Each iteration computes the gradients of the target
logit and of the sum of the other logits with respect to the input, scores every pair (p, q) of
still-modifiable features by `(a_p + a_q) * |b_p + b_q|` under `a_p + a_q > 0`, `b_p + b_q < 0`,
and changes the best pair; examples stop when they reach the target. Batched over examples,
pair scores computed in chunks of examples (`chunk`) to bound memory (D x D per example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack

__all__ = ["JSMA", "JSMAConfig"]


@dataclass
class JSMAConfig:
    theta: float = 1.0
    gamma: float = 0.1
    chunk: int = 64


@ATTACKS.register("jsma")
class JSMA(Attack):
    """Saliency-map attack changing feature pairs towards a target class."""

    Config = JSMAConfig

    def _grads(
        self, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        logits = self.model(x)
        target_logit = logits.gather(1, t[:, None]).sum()
        (a,) = torch.autograd.grad(target_logit, x, retain_graph=True)
        (total,) = torch.autograd.grad(logits.sum(), x)
        return a.flatten(1), (total - a).flatten(1), logits.detach()

    def _best_pairs(self, a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(a), self.config.chunk):
            aa, bb, dd = (
                a[i : i + self.config.chunk],
                b[i : i + self.config.chunk],
                domain[i : i + self.config.chunk],
            )
            sa = aa[:, :, None] + aa[:, None, :]  # (B, D, D)
            sb = bb[:, :, None] + bb[:, None, :]
            ok = (sa > 0) & (sb < 0) & dd[:, :, None] & dd[:, None, :]
            ok &= ~torch.eye(aa.shape[1], dtype=torch.bool, device=aa.device)
            score = torch.where(ok, sa * sb.abs(), torch.full_like(sa, -1.0))
            out.append(score.flatten(1).argmax(1))
        return torch.cat(out)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        lo, hi = self.clip
        n = x.shape[0]
        if target is None:
            with torch.no_grad():
                logits = self.model(x)
            target = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
        adv = x.flatten(1).clone()
        d = adv.shape[1]
        domain = adv < hi if c.theta > 0 else adv > lo
        max_iters = int(c.gamma * d / 2)
        rows = torch.arange(n, device=x.device)
        for _ in range(max_iters):
            a, b, logits = self._grads(adv.view_as(x), target)
            running = (logits.argmax(1) != target) & (domain.sum(1) >= 2)
            if not running.any():
                break
            pair = self._best_pairs(a, b, domain)
            p, q = pair // d, pair % d
            step = torch.where(
                running,
                torch.full_like(p, 1, dtype=adv.dtype),
                torch.zeros_like(p, dtype=adv.dtype),
            )
            for idx in (p, q):
                adv[rows, idx] = (adv[rows, idx] + c.theta * step).clamp(lo, hi)
                domain[rows, idx] &= ~running
        return adv.view_as(x)
