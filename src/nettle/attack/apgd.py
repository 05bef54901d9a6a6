"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", arXiv:2003.01690), with the CE and DLR losses.

Threat model: white-box, L-infinity or L2 ball of radius `eps`, valid range. From a random
point on the ball's surface (Linf: scaled so the largest coordinate is `eps`; L2: norm `eps`),
`steps` iterations of gradient ascent with momentum:
`z = P(x_k + eta * s(grad))`, `x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`, with
`a = 0.75` (1 at the first step), `s` the sign (Linf) or L2-normalised gradient, and `P` the
projection onto the ball and the range. The step size `eta` starts at `2 * eps` and is checked
after 22% of the iterations, then after intervals shrinking by 3% down to 6% (integer counts as
the reference code). At a check, per example, `eta` is halved and the iterate restarts from the
best point (with its gradient) when the loss rose between consecutive iterates in at most
`rho = 75%` of the interval's steps, or when the previous check did not halve and the best loss
has not improved since (as the reference code: the first check never takes the second rule,
and its first step counts as an increase when its loss is positive, compared with a zero row).
Returns, per example, the last point that fooled the model, else the
highest-loss point. `restarts` repeats from fresh random points on the examples not yet
fooled. Losses: `ce`, and `dlr = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`;
targeted: minus the CE to the target, and
`-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)` (z_pi sorted logits, largest first).
Shapes: x (N, ...) in the valid range, y (N,) class indices, target (N,) or None.

Defaults: AutoAttack's APGD: `eps = 8/255`, 100 iterations, 1 restart, rho 0.75.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack, per_example_norm, project

__all__ = ["APGD", "APGDConfig", "checkpoints", "dlr_loss"]


@dataclass
class APGDConfig:
    """APGD options."""

    eps: float = 8 / 255
    steps: int = 100
    norm: str = "linf"
    loss: str = "ce"
    restarts: int = 1
    rho: float = 0.75

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"APGD norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {self.loss!r}")
        if self.eps < 0 or self.steps < 1 or self.restarts < 1:
            raise ValueError(f"APGD needs eps >= 0, steps >= 1, restarts >= 1, got {self}")


def dlr_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Difference-of-logits-ratio loss per example, to maximise (targeted when `target`)."""
    srt = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is not None:
        z_t = logits.gather(1, target[:, None]).squeeze(1)
        return -(z_y - z_t) / (srt[:, -1] - (srt[:, -3] + srt[:, -4]) / 2 + 1e-12)
    top_is_y = logits.argmax(1) == y
    other = torch.where(top_is_y, srt[:, -2], srt[:, -1])
    return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """Iteration counts after which the step size is checked (AutoAttack's integer recipe)."""
    k, k_min, shrink = (
        max(int(0.22 * steps), 1),
        max(int(0.06 * steps), 1),
        max(int(0.03 * steps), 1),
    )
    out, at = [], k
    while at <= steps:
        out.append(at)
        k = max(k - shrink, k_min)
        at += k
    return out


@ATTACKS.register("apgd")
class APGD(Attack):
    """Auto-PGD with the parameter-free step-size schedule, CE or DLR loss."""

    Config = APGDConfig

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if self.config.loss == "dlr":
            return dlr_loss(logits, y, target)
        return super().loss(logits, y, target)

    def fooled(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Which examples these outputs count as fooled (the base's `success`)."""
        return self.success(logits, y, target)

    def _grad(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g, loss, output = self.loss_grad(x, y, target)  # counted, averaged under EOT
        return g, loss, self.fooled(output, y, target)

    def _project(self, x: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        return (x + project(point - x, self.config.eps, self.config.norm)).clamp(lo, hi)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        c, g = self.config, self.generator
        if c.norm == "linf":
            t = 2 * torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) - 1
        else:
            t = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return (x + c.eps * t / (per_example_norm(t, c.norm) + 1e-12)).clamp(*self.clip)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run: (result, fooled, best loss), per example."""
        c = self.config
        view = (-1, *([1] * (x.dim() - 1)))
        cur = self._start(x)
        g, loss, fooled = self._grad(cur, y, target)
        found = cur.clone()
        best, best_g, best_loss = cur.clone(), g.clone(), loss.clone()
        eta = torch.full((len(x), *view[1:]), 2 * c.eps, device=x.device, dtype=x.dtype)
        prev, prev_loss = cur.clone(), torch.zeros_like(loss)
        marks = set(checkpoints(c.steps))
        last_mark, increases = 0, torch.zeros_like(loss)
        halved_last, best_at_mark = torch.ones_like(fooled), best_loss.clone()
        for k in range(1, c.steps + 1):
            a = 0.75 if k > 1 else 1.0
            direction = g.sign() if c.norm == "linf" else g / (per_example_norm(g, "l2") + 1e-12)
            z = self._project(x, cur + eta * direction)
            prev, cur = cur, self._project(x, cur + a * (z - cur) + (1 - a) * (cur - prev))
            g, loss, now = self._grad(cur, y, target)
            found = torch.where(now.view(view), cur, found)
            fooled |= now
            increases += loss > prev_loss
            prev_loss = loss
            better = loss > best_loss
            best = torch.where(better.view(view), cur, best)
            best_g = torch.where(better.view(view), g, best_g)
            best_loss = torch.where(better, loss, best_loss)
            if k in marks:
                halve = (increases <= c.rho * (k - last_mark)) | (
                    ~halved_last & (best_at_mark >= best_loss)
                )
                eta = torch.where(halve.view(view), eta / 2, eta)
                cur = torch.where(halve.view(view), best, cur)
                g = torch.where(halve.view(view), best_g, g)
                halved_last, best_at_mark = halve, best_loss.clone()
                last_mark, increases = k, torch.zeros_like(loss)
        return torch.where(fooled.view(view), found, best), fooled, best_loss

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        if c.loss == "dlr":
            if self.custom_objective:
                raise ValueError("APGD loss 'dlr' needs a classifier's logits; use loss 'ce'")
            with torch.no_grad():
                k = self.forward(x[:1]).shape[1]
            if k < (4 if target is not None else 3):
                raise ValueError(
                    f"APGD-DLR needs at least {4 if target is not None else 3} classes"
                )
        adv, found, best_loss = self._run(x, y, target)
        gradients = (c.steps + 1) * len(x)
        self.record(steps=c.steps, restarts=1, gradients=gradients)
        for r in range(1, c.restarts):
            todo = (~found).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            tt = target[todo] if target is not None else None
            a, f, bl = self._run(x[todo], y[todo], tt)
            gradients += (c.steps + 1) * len(todo)
            take = f | (bl > best_loss[todo])
            idx = todo[take]
            adv[idx], found[idx], best_loss[idx] = a[take], f[take], bl[take]
            self.record(restarts=r + 1, gradients=gradients)
        return adv
