"""Carlini-Wagner L2 (Carlini & Wagner 2017, "Towards evaluating the robustness of neural
networks", arXiv:1608.04644).

Threat model: white-box, minimal L2 perturbation, no bound. The adversarial input is
`x' = (tanh(w) + 1) / 2` mapped onto the valid range, starting from `w = atanh((2x - 1) *
0.999999)` (Foolbox's shrink, so pixels at exactly 0 or 1 have a finite `w` and can move). Adam
on `w` minimises `||x' - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)` (targeted:
`max_{i != t} Z_i - Z_t`) for `steps` iterations, aborting when the batch loss stops falling
(checked every `steps/10`). A binary search over `c` per example (`binary_search_steps`,
starting at `initial_const`): on success the upper bound drops to `c`, on failure the lower
bound rises to `c`; `c` becomes the midpoint, or grows x10 while no upper bound is known. Each
search step restarts from the input with a fresh Adam. Per example, the successful `x'` with
the smallest L2 distance is kept; examples never fooled come back unchanged.
Shapes: x (N, ...) in the valid range, y (N,) class indices, target (N,) or None.

Defaults are the original code's (carlini/nn_robust_attacks, also Foolbox and advertorch):
9 binary-search steps, 10000 iterations, lr 0.01, c0 1e-3, kappa 0, abort early.
Extras: `const` (N,) the smallest constant that succeeded (inf where none did), `steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack, margin_loss

__all__ = ["CW", "CWConfig"]


@dataclass
class CWConfig:
    """CW-L2 options."""

    binary_search_steps: int = 9
    steps: int = 10000
    lr: float = 0.01
    initial_const: float = 1e-3
    kappa: float = 0.0
    abort_early: bool = True

    def __post_init__(self) -> None:
        if self.binary_search_steps < 1 or self.steps < 1:
            raise ValueError(f"CW needs binary_search_steps >= 1 and steps >= 1, got {self}")
        if self.initial_const <= 0 or self.lr <= 0 or self.kappa < 0:
            raise ValueError(f"CW needs initial_const > 0, lr > 0, kappa >= 0, got {self}")


@ATTACKS.register("cw")
class CW(Attack):
    """Carlini-Wagner L2 attack with a per-example binary search over the constant."""

    Config = CWConfig
    supports_eot = False
    any_objective = False  # the logit margin of a classifier

    def _to_tanh(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        return torch.atanh(((x - lo) / (hi - lo) * 2 - 1) * 0.999999)

    def _from_tanh(self, w: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        return (torch.tanh(w) + 1) / 2 * (hi - lo) + lo

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        n = len(x)
        const = torch.full((n,), c.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best, best_l2 = x.clone(), torch.full_like(const, math.inf)
        w0 = self._to_tanh(x)
        steps = 0
        for outer in range(c.binary_search_steps):
            if c.binary_search_steps >= 10 and outer == c.binary_search_steps - 1:
                const = upper.clamp(max=1e10)  # the last step retries at the upper bound
            succeeded, ran = self._optimise(x, y, target, w0, const, best, best_l2)
            steps += ran
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
        self.record(steps=steps, gradients=steps * n, const=upper)
        return best

    def _optimise(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        w0: torch.Tensor,
        const: torch.Tensor,
        best: torch.Tensor,
        best_l2: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        """One search step at `const`; updates `best`/`best_l2` in place. Returns who succeeded."""
        c = self.config
        view = (-1, *([1] * (x.dim() - 1)))
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=c.lr)
        succeeded = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        check_every, previous = math.ceil(c.steps / 10), math.inf
        for step in range(c.steps):
            adv = self._from_tanh(w)
            l2 = (adv - x).flatten(1).pow(2).sum(1)
            margin = margin_loss(self.forward(adv), y, target)
            loss = (l2 + const * margin.clamp(min=-c.kappa)).sum()
            (w.grad,) = torch.autograd.grad(loss, w)
            self._counts["backwards"] += len(x)
            with torch.no_grad():
                ok = margin < -c.kappa
                improve = ok & (l2 < best_l2)
                best_l2.copy_(torch.where(improve, l2, best_l2))
                best.copy_(torch.where(improve.view(view), adv, best))
                succeeded |= ok
            opt.step()
            if c.abort_early and step % check_every == 0:
                value = loss.item()
                if value > previous * 0.9999:
                    return succeeded, step + 1
                previous = value
        return succeeded, c.steps
