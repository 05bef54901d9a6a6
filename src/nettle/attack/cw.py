"""Carlini-Wagner L2 (Carlini & Wagner 2017, arXiv:1608.04644).

Threat model: white-box, minimal L2 perturbation, no bound. Optimises in tanh space
(`x = (tanh(w) * (1 - 1e-6) + 1) / 2` mapped onto the valid range, so pixels at exactly 0 or 1
can move) with Adam the objective `||x' - x||^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)`
(targeted: `max_{i != t} Z_i - Z_t`), with a per-example binary search over `c`
(`binary_search_steps`, starting at `initial_const`, x10 while unsuccessful), early abort, and
keeps per example the successful result of smallest L2 norm (the input itself if none).
Shapes: x (N, ...) in the valid range, y (N,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nettle.attack.base import ATTACKS, Attack

__all__ = ["CW", "CWConfig"]


@dataclass
class CWConfig:
    binary_search_steps: int = 9
    steps: int = 1000
    lr: float = 0.01
    initial_const: float = 1e-3
    kappa: float = 0.0
    abort_early: bool = True


@ATTACKS.register("cw")
class CW(Attack):
    """Carlini-Wagner L2 attack with a binary search over the constant."""

    Config = CWConfig

    def _to_tanh(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        z = ((x - lo) / (hi - lo) * 2 - 1) / (1 - 1e-6)
        return torch.atanh(z.clamp(-1 + 1e-7, 1 - 1e-7))

    def _from_tanh(self, w: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        return (torch.tanh(w) * (1 - 1e-6) + 1) / 2 * (hi - lo) + lo

    def _margin(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        k = self.config.kappa
        cls = target if target is not None else y
        onehot = F.one_hot(cls, logits.shape[1]).bool()
        real = logits[onehot]
        other = logits.masked_fill(onehot, float("-inf")).amax(1)
        diff = other - real if target is not None else real - other
        return diff.clamp(min=-k)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        n = x.shape[0]
        const = torch.full((n,), c.initial_const, device=x.device)
        lower, upper = torch.zeros(n, device=x.device), torch.full((n,), 1e10, device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()
        w0 = self._to_tanh(x)
        view = (-1, *([1] * (x.dim() - 1)))
        for _ in range(c.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=c.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = float("inf")
            for step in range(c.steps):
                adv = self._from_tanh(w)
                l2 = (adv - x).flatten(1).pow(2).sum(1)
                logits = self.model(adv)
                margin = self._margin(logits, y, target)
                loss = (l2 + const * margin).sum()
                opt.zero_grad()
                (grad,) = torch.autograd.grad(loss, w)
                w.grad = grad
                opt.step()
                with torch.no_grad():
                    pred = logits.argmax(1)
                    ok = (pred == target) if target is not None else (pred != y)
                    ok = ok & (margin <= -c.kappa + 1e-12) if c.kappa > 0 else ok
                    improve = ok & (l2 < best_l2)
                    best_l2 = torch.where(improve, l2, best_l2)
                    best = torch.where(improve.view(view), adv.detach(), best)
                    succeeded |= ok
                if c.abort_early and step % max(1, c.steps // 10) == 0:
                    if loss.item() > previous * 0.9999:
                        break
                    previous = loss.item()
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(~succeeded, torch.maximum(lower, const), lower)
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
        return best
