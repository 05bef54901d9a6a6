"""SPSA (Uesato, O'Donoghue, van den Oord & Kohli 2018, "Adversarial risk and the dangers of
evaluating against weak attacks", arXiv:1802.05666), as in cleverhans.

Threat model: black-box with scores (logits only, no gradients), L-infinity ball of radius
`eps`, valid range. The loss is the logit margin `Z_y - max_{i != y} Z_i` (targeted:
`max_{i != t} Z_i - Z_t`), minimised. Each step estimates its gradient at the current point
`x_hat` from `nb_sample` Rademacher directions `v` per example, as
`mean[(f(x_hat + delta*v) - f(x_hat - delta*v)) * v] / (2*delta)`; all `2 * nb_sample` rows of an
example are evaluated in one batched forward pass together with other examples' rows (up to
`max_batch` rows per pass). Adam (beta 0.9/0.999, epsilon 1e-9, as cleverhans) steps on the
estimate, then the perturbation is projected onto the ball and the range. An example stops once
its loss falls below `early_stop_loss_threshold` (default 0: as soon as it is fooled; None runs
every step, as cleverhans' default), so queries go only to examples still standing.
Shapes: x (N, ...) in the valid range, y (N,) class indices, target (N,) or None.

Defaults: cleverhans' `delta = 0.01, lr = 0.01, nb_sample = 128` (pairs); `eps = 8/255` and
`steps = 100` (cleverhans requires both; advertorch's benchmark uses 100 steps).
Extras: `queries` (N,) model evaluations per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack, margin_loss

__all__ = ["SPSA", "SPSAConfig"]


@dataclass
class SPSAConfig:
    """SPSA options."""

    eps: float = 8 / 255
    steps: int = 100
    lr: float = 0.01
    delta: float = 0.01
    nb_sample: int = 128
    early_stop_loss_threshold: float | None = 0.0
    max_batch: int = 16384

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 0 or self.nb_sample < 1 or self.max_batch < 1:
            raise ValueError(f"SPSA needs eps, steps >= 0 and nb_sample, max_batch >= 1: {self}")


@ATTACKS.register("spsa")
class SPSA(Attack):
    """Gradient-free attack by simultaneous-perturbation gradient estimates."""

    Config = SPSAConfig
    supports_eot = False  # no gradients to average
    any_objective = False  # the logit margin of a classifier

    @torch.no_grad()
    def _margins(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return margin_loss(self.forward(x), y, target)

    @torch.no_grad()
    def estimate(
        self, x_hat: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """SPSA gradient estimate (A, ...) of the margin at `x_hat` (A, ...)."""
        c = self.config
        s, shape = c.nb_sample, x_hat.shape[1:]
        per_pass = max(1, c.max_batch // (2 * s))  # whole examples per forward pass
        out = []
        for i in range(0, len(x_hat), per_pass):
            xa, ya = x_hat[i : i + per_pass], y[i : i + per_pass]
            ta = target[i : i + per_pass] if target is not None else None
            a = len(xa)
            v = torch.randint(0, 2, (a, 1, s, *shape), generator=self.generator, device=xa.device)
            v = v.to(xa.dtype).mul_(2).sub_(1)  # Rademacher, (A, 1, S, ...)
            sign = torch.tensor([1.0, -1.0], device=xa.device, dtype=xa.dtype)
            rows = xa[:, None, None] + c.delta * sign.view(1, 2, 1, *([1] * len(shape))) * v
            labels = ya.repeat_interleave(2 * s)
            tlabels = ta.repeat_interleave(2 * s) if ta is not None else None
            f = self._margins(rows.flatten(0, 2), labels, tlabels).view(a, 2, s)  # (A, 2, S)
            diff = (f[:, 0] - f[:, 1]) / (2 * c.delta)  # (A, S)
            out.append((diff.view(a, 1, s, *([1] * len(shape))) * v).mean(2).squeeze(1))
        return torch.cat(out)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        lo, hi = self.clip
        b1, b2 = 0.9, 0.999
        delta, m, v = torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        ran = 0
        for t in range(1, c.steps + 1):
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            ran = t
            xi, yi = x[idx], y[idx]
            ti = target[idx] if target is not None else None
            g = self.estimate(xi + delta[idx], yi, ti)
            m[idx] = b1 * m[idx] + (1 - b1) * g
            v[idx] = b2 * v[idx] + (1 - b2) * g * g
            m_hat, v_hat = m[idx] / (1 - b1**t), v[idx] / (1 - b2**t)
            d = (delta[idx] - c.lr * m_hat / (v_hat.sqrt() + 1e-9)).clamp(-c.eps, c.eps)
            delta[idx] = (xi + d).clamp(lo, hi) - xi
            queries[idx] += 2 * c.nb_sample
            if c.early_stop_loss_threshold is not None:
                f = self._margins(xi + delta[idx], yi, ti)
                queries[idx] += 1
                active[idx] = f >= c.early_stop_loss_threshold
        self.record(steps=ran, queries=queries)
        return x + delta
