"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020, arXiv:1912.00049), L-infinity and L2,
as run inside AutoAttack (Croce & Hein 2020, ICML, arXiv:2003.01690).

Threat model: black-box, score-based classifier attack: it reads only the model's logits (no
gradients), at most `queries` forward passes per example and restart after the first. It
minimises the margin `z_y - max_{i != y} z_i` by random search: the start is vertical stripes of
`+-eps` (Linf) or a grid of `eps`-normalised square bumps (L2); each iteration proposes a change
inside one random `s x s` window (Linf: set to `+-2 eps` per channel, then clipped to the ball;
L2: mass moved from a second window into the first, keeping the norm at `eps`), and each example
keeps it when its margin falls or turns negative. The window's share `p` of the image starts at
`p_init` and halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 (on a
10,000-query scale when `rescale`). As in AutoAttack's code, one iteration draws one window
position and (Linf) one sign per channel for the whole batch, with the random numbers in the
reference's order, so a CPU run with the same seed makes the same proposals. Examples stop being
queried once fooled. Inputs are images (N, C, H, W) in the valid range; y (N,) class indices.

Defaults: AutoAttack's Square: 5000 queries, `p_init = 0.8`, 1 restart, no rescaled schedule,
margin loss; `eps` 8/255 (L-infinity), 0.5 (L2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nettle.attack.base import ATTACKS, Attack, margin_loss

__all__ = ["Square", "SquareConfig", "square_size"]

_EPS = {"linf": 8 / 255, "l2": 0.5}
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass
class SquareConfig:
    """Square options; `eps` defaults by `norm` (see the module docstring)."""

    eps: float | None = None
    queries: int = 5000
    norm: str = "linf"
    p_init: float = 0.8
    restarts: int = 1
    rescale: bool = False

    def __post_init__(self) -> None:
        if self.norm not in _EPS:
            raise ValueError(f"Square norm must be 'linf' or 'l2', got {self.norm!r}")
        self.eps = _EPS[self.norm] if self.eps is None else float(self.eps)
        if self.eps < 0 or self.queries < 0 or self.restarts < 1 or not 0 < self.p_init <= 1:
            raise ValueError(
                f"Square needs eps >= 0, queries >= 0, restarts >= 1, 0 < p_init <= 1, got {self}"
            )


def square_size(it: int, c: SquareConfig, shape: tuple[int, int, int]) -> int:
    """Side of the square window at iteration `it` for images of `shape` (C, H, W)."""
    if c.rescale:
        it = int(it / c.queries * 10000)
    p = c.p_init / 2 ** sum(it > h for h in _HALVINGS)
    ch, h, w = shape
    s = max(round(math.sqrt(p * (ch * h * w) / ch)), 1 if c.norm == "linf" else 3)
    if c.norm == "l2" and s % 2 == 0:
        s += 1
    return min(s, h, w)


def _bump(s: int, rows: int) -> torch.Tensor:
    """Concentric squares on a (rows, s) patch, each ring weighted 1/(ring + 1)^2, L2-normed."""
    ci, cj, rings = rows // 2, s // 2, max(rows // 2 + 1, s // 2 + 1)
    i, j = torch.arange(rows)[:, None], torch.arange(s)[None, :]
    inner = torch.maximum((i - ci).abs(), (j - cj).abs())
    weights = 1.0 / torch.arange(1, rings + 1, dtype=torch.float32) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # sum of the weights from each ring outwards
    out = tail[inner.clamp(max=rings - 1)] * (inner < rings)
    return out / out.norm().clamp_min(1e-12) if out.numel() else out


@ATTACKS.register("square")
class Square(Attack):
    """Score-based random search over square windows (black-box; needs logits)."""

    Config = SquareConfig
    targeted_supported = False
    supports_eot = False
    any_objective = False  # it scores the logit margin

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.generator.device)

    def _int(self, high: int) -> int:
        return int((high * self._rand(1)).long())

    def _sign(self, *shape: int) -> torch.Tensor:
        return (2 * self._rand(*shape) - 1).sign()

    def _eta(self, s: int) -> torch.Tensor:
        """The L2 proposal: a positive bump over a negative one, normalised, maybe transposed."""
        eta = torch.cat((_bump(s, s // 2), -_bump(s, s - s // 2))).to(self.generator.device)
        eta = eta / eta.norm().clamp_min(1e-12)
        return eta.T if self._rand(1).item() > 0.5 else eta

    def _margin(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return margin_loss(self.forward(x), y)

    def _l2_unit(self, delta: torch.Tensor) -> torch.Tensor:
        return delta / (delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)

    def _init(self, x: torch.Tensor) -> torch.Tensor:
        c, (n, ch, h, w) = self.config, x.shape
        if c.norm == "linf":
            return x + c.eps * self._sign(n, ch, 1, w)
        delta, s = torch.zeros_like(x), h // 5
        start = (h - 5 * s) // 2
        for r in range(h // s):
            for q in range(w // s):
                top, left = start + r * s, start + q * s
                bump = self._eta(s).view(1, 1, s, s) * self._sign(n, ch, 1, 1)
                window = delta[:, :, top : top + s, left : left + s]
                window += bump[:, :, : window.shape[2], : window.shape[3]]
        return x + self._l2_unit(delta) * c.eps

    def _propose(self, x: torch.Tensor, best: torch.Tensor, it: int) -> torch.Tensor:
        c, (n, ch, h, w) = self.config, x.shape
        s = square_size(it, c, (ch, h, w))
        vh, vw = self._int(h - s), self._int(w - s)
        if c.norm == "linf":
            new = best.clone()
            new[:, :, vh : vh + s, vw : vw + s] += 2 * c.eps * self._sign(ch, 1, 1)
            return torch.minimum(torch.maximum(new, x - c.eps), x + c.eps)
        delta = best - x
        win = delta[:, :, vh : vh + s, vw : vw + s]
        win_norm = win.square().sum((-2, -1), keepdim=True).sqrt()
        vh2, vw2 = self._int(h - s), self._int(w - s)
        mask = torch.zeros_like(x)
        mask[:, :, vh : vh + s, vw : vw + s] = 1.0
        mask[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 1.0
        image_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        windows_norm = (delta * mask).square().sum((-2, -1), keepdim=True).sqrt()
        step = self._eta(s).view(1, 1, s, s) * self._sign(n, ch, 1, 1)
        step = step + win / (1e-12 + win_norm)
        budget = ((c.eps**2 - image_norm**2).clamp_min(0) / ch + windows_norm**2).sqrt()
        step = step / (1e-12 + step.square().sum((-2, -1), keepdim=True).sqrt()) * budget
        delta[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
        delta[:, :, vh : vh + s, vw : vw + s] = step
        return x + self._l2_unit(delta) * c.eps

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random search: the best points and the queries each example used."""
        best = self._init(x).clamp(*self.clip)
        margin = self._margin(best, y)
        queries = torch.ones(len(x), device=x.device, dtype=torch.long)
        if (margin < 0).all():
            return best, queries
        for it in range(self.config.queries):
            idx = (margin > 0).nonzero().squeeze(1)
            new = self._propose(x[idx], best[idx], it).clamp(*self.clip)
            m = self._margin(new, y[idx])
            take = (m < margin[idx]) | (m <= 0)
            margin[idx] = torch.where(take, m, margin[idx])
            best[idx] = torch.where(take.view(-1, 1, 1, 1), new, best[idx])
            queries[idx] += 1
            if (margin <= 0).all():
                break
        return best, queries

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"Square attacks images (N, C, H, W), got shape {tuple(x.shape)}")
        adv, spent = x.clone(), torch.zeros(len(x), device=x.device, dtype=torch.long)
        with torch.no_grad():
            robust = self.forward(x).argmax(1) == y
            for _ in range(self.config.restarts):
                todo = robust.nonzero().squeeze(1)
                if len(todo) == 0:
                    break
                found, queries = self._run(x[todo], y[todo])
                spent[todo] += queries
                fooled = self.forward(found).argmax(1) != y[todo]
                adv[todo[fooled]] = found[fooled]
                robust[todo[fooled]] = False
        self.record(queries=spent)
        return adv
