"""SPSA (Uesato et al. 2018, arXiv:1802.05666), as in cleverhans.

Threat model: black-box (scores only, no gradients), L-infinity ball of radius `eps`. Each step
estimates the gradient of the margin loss `Z_y - max_{i != y} Z_i` (targeted: `max_{i != t} Z_i
- Z_t`) from `nb_sample` Rademacher directions per example, `f(x + delta*v) - f(x - delta*v)`,
evaluated in one batched forward pass (chunked to bound memory), then takes an Adam step on the
perturbation, projects to the ball and clips to the valid range. Stops early for examples whose
loss falls below 0 (already fooled). Shapes: x (N, ...) in the valid range, y (N,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack

__all__ = ["SPSA", "SPSAConfig", "margin_loss"]


@dataclass
class SPSAConfig:
    eps: float = 0.3
    steps: int = 100
    lr: float = 0.01
    delta: float = 0.01
    nb_sample: int = 128
    chunk: int = 8192  # rows per forward pass of the estimator


def margin_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-example margin to minimise: positive while the attack has not succeeded."""
    cls = target if target is not None else y
    onehot = torch.nn.functional.one_hot(cls, logits.shape[1]).bool()
    real = logits[onehot]
    other = logits.masked_fill(onehot, float("-inf")).amax(1)
    return other - real if target is not None else real - other


@ATTACKS.register("spsa")
class SPSA(Attack):
    """Gradient-free attack by simultaneous-perturbation gradient estimates."""

    Config = SPSAConfig

    def _loss(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), self.config.chunk):
                t = target[i : i + self.config.chunk] if target is not None else None
                out.append(
                    margin_loss(
                        self.model(x[i : i + self.config.chunk]), y[i : i + self.config.chunk], t
                    )
                )
        return torch.cat(out)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        lo, hi = self.clip
        n, s = x.shape[0], c.nb_sample
        delta = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=c.lr)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        self.queries = 0
        for _ in range(c.steps):
            base = (x + delta.detach()).clamp(lo, hi)
            v = (
                torch.randint(
                    0, 2, (n * s, *x.shape[1:]), generator=self.generator, device=x.device
                ).to(x.dtype)
                * 2
                - 1
            )  # (N*S, ...) Rademacher
            xs = base.repeat_interleave(s, 0)
            ys = y.repeat_interleave(s, 0)
            ts = target.repeat_interleave(s, 0) if target is not None else None
            both = torch.cat([xs + c.delta * v, xs - c.delta * v])
            f = self._loss(
                both, torch.cat([ys, ys]), torch.cat([ts, ts]) if ts is not None else None
            )
            self.queries += len(both)
            diff = (f[: n * s] - f[n * s :]).view(-1, *([1] * (x.dim() - 1))) / (2 * c.delta)
            grad = (diff * v).view(n, s, *x.shape[1:]).mean(1)
            opt.zero_grad()
            delta.grad = grad * active.view(-1, *([1] * (x.dim() - 1)))
            opt.step()
            with torch.no_grad():
                delta.clamp_(-c.eps, c.eps)
                delta.copy_((x + delta).clamp(lo, hi) - x)
                active &= self._loss(x + delta, y, target) > 0
            if not active.any():
                break
        return (x + delta.detach()).clamp(lo, hi)

    def extras(self) -> dict:
        return {"queries": getattr(self, "queries", 0)}
