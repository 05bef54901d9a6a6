"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack", ICML 2020, arXiv:1907.02044), untargeted and
the targeted FAB-T of AutoAttack (Croce & Hein 2020, ICML, arXiv:2003.01690).

Threat model: white-box classifier attack, L-infinity or L2; it needs the model's logits (it
linearises their differences), not a loss. From `x_0 = x` each of `steps` iterations linearises
the decision boundary at the current point `x_k` (FAB: towards the class whose linearised
boundary is closest in the dual norm; FAB-T: towards a fixed target class), projects both `x_k`
and the original `x` onto that hyperplane inside the valid range (minimal `norm` distance, see
`project_onto_hyperplane`), giving steps `d_k` and `d_0`, and moves to
`(1 - a)(x_k + eta d_k) + a (x + eta d_0)` with `a = min(|d_k| / (|d_k| + |d_0|), alpha_max)`.
When the new point is misclassified it is kept if it is the closest so far and the iterate is
pulled back to `x + beta (x_k - x)`. An example counts as fooled when the closest misclassified
point lies within `eps`; otherwise the input is returned. Restarts after the first begin at a
random point of norm `eps / 2`, on the examples not fooled yet. FAB-T targets each of the
`targets` classes the clean input scores highest after the label; the runs for all targets go
in one batch (one row per example and target; memory grows with `targets`), and an example
takes its first target in rank order (runner-up first) that fooled it within `eps` - the
reference's result, which runs the targets in turn on the examples not fooled yet (restarts:
the reference repeats each target, here each restart covers all targets). Untargeted success
(the prediction leaves the label). Untargeted FAB takes one backward pass per class.
Shapes: x (N, ...) in the valid range, y (N,) class indices; no user targets.

Defaults: the reference FAB (`alpha_max = 0.1, eta = 1.05, beta = 0.9`, 100 iterations,
1 restart) and AutoAttack's "standard" FAB-T (9 targets); `eps` 8/255 (L-infinity), 0.5 (L2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nettle.attack.apgd_t import top_targets
from nettle.attack.base import ATTACKS, Attack

__all__ = ["FAB", "FABT", "FABConfig", "FABTConfig", "project_onto_hyperplane"]

_EPS = {"linf": 8 / 255, "l2": 0.5}


@dataclass
class FABConfig:
    """FAB options; `eps` defaults by `norm` (see the module docstring)."""

    eps: float | None = None
    steps: int = 100
    norm: str = "linf"
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def __post_init__(self) -> None:
        if self.norm not in _EPS:
            raise ValueError(f"FAB norm must be 'linf' or 'l2', got {self.norm!r}")
        self.eps = _EPS[self.norm] if self.eps is None else float(self.eps)
        if self.eps < 0 or self.steps < 1 or self.restarts < 1:
            raise ValueError(f"FAB needs eps >= 0, steps >= 1, restarts >= 1, got {self}")
        if not 0 <= self.alpha_max <= 1 or self.eta < 1 or not 0 < self.beta < 1:
            raise ValueError(f"FAB needs 0 <= alpha_max <= 1, eta >= 1, 0 < beta < 1, got {self}")


@dataclass
class FABTConfig(FABConfig):
    """FAB-T options: FAB's and the number of target classes."""

    targets: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets < 1:
            raise ValueError(f"FAB-T needs targets >= 1, got {self.targets}")


def project_onto_hyperplane(
    t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str, clip: tuple[float, float]
) -> torch.Tensor:
    """Smallest step `d` (per row, `norm` linf or l2) with `w . (t + d) = b` and `t + d` inside
    `clip`; where no such step exists, the step inside `clip` that gets closest to the plane.

    The minimiser is `d_i = clamp(lam * u_i)` to the range, with `u = -sign(w)` (Linf) or `-w`
    (L2) after orienting `w` so that the plane lies below `w . t`: `w . d(lam)` is piecewise
    linear and decreasing in `lam`, with a breakpoint where each coordinate meets the range's
    edge. All breakpoints are evaluated at once (sort, cumulative sums) and `lam` is solved on
    the segment that reaches the plane. Shapes: t, w (M, D); b (M,); returns (M, D).
    """
    lo, hi = clip
    need = b - (w * t).sum(1)
    flip = need > 0
    w = torch.where(flip[:, None], -w, w)
    need = need.abs().neg()  # w . d must fall by |need|
    u = -w.sign() if norm == "linf" else -w
    room = torch.where(u > 0, hi - t, t - lo)
    full = u.sign() * room  # the largest move along u, per coordinate
    active = u != 0
    lam = torch.where(active, room / u.abs().clamp_min(1e-30), torch.full_like(t, float("inf")))
    lam, order = lam.sort(dim=1)
    sat = (w * full).gather(1, order)  # each coordinate's share once it is at the edge
    slope = (w * u).gather(1, order)  # its share per unit of lam before that (<= 0)
    sat_sum = sat.cumsum(1)
    slope_left = slope.sum(1, keepdim=True) - slope.cumsum(1)
    finite = lam.isfinite()
    value = sat_sum + torch.where(finite, lam, torch.zeros_like(lam)) * slope_left
    reached = finite & (value <= need[:, None])
    feasible = reached.any(1)
    k = reached.int().argmax(1, keepdim=True)  # the first breakpoint at or past the plane
    before = (k - 1).clamp_min(0)
    sat_prev = torch.where(k > 0, sat_sum.gather(1, before), torch.zeros_like(need[:, None]))
    slope_prev = torch.where(k > 0, slope_left.gather(1, before), slope.sum(1, keepdim=True))
    safe = torch.where(slope_prev < 0, slope_prev, -torch.ones_like(slope_prev))
    step = torch.where(slope_prev < 0, (need[:, None] - sat_prev) / safe, torch.zeros_like(safe))
    d = torch.maximum(torch.minimum(step.clamp_min(0) * u, hi - t), lo - t)
    return torch.where(feasible[:, None], d, full) * active


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    flat = v.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@ATTACKS.register("fab")
class FAB(Attack):
    """Fast Adaptive Boundary attack (untargeted; minimal norm, reported within `eps`)."""

    Config = FABConfig
    targeted_supported = False
    supports_eot = False
    any_objective = False  # it linearises the logits

    def _linearise(
        self, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit differences `z_k - z_y` (N, K) and their input gradients (N, K, D); with a
        goal only the goal's column. The label's own column is pushed to 1e10."""
        x = x.detach().requires_grad_(True)
        logits = self.forward(x)
        own = logits.gather(1, y[:, None])
        if goal is not None:
            diff = logits.gather(1, goal[:, None]) - own
            (g,) = torch.autograd.grad(diff.sum(), x)
            self._counts["backwards"] += len(x)
            return diff.detach(), g.flatten(1)[:, None]
        self._counts["backwards"] += len(x) * logits.shape[1]
        grads = [
            torch.autograd.grad(logits[:, k].sum(), x, retain_graph=True)[0].flatten(1)
            for k in range(logits.shape[1])
        ]
        jac = torch.stack(grads, 1)
        diff = (logits - own).detach().scatter(1, y[:, None], 1e10)
        return diff, jac - jac.gather(1, y[:, None, None].expand(-1, 1, jac.shape[2]))

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        c, g = self.config, self.generator
        if c.norm == "linf":
            t = 2 * torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) - 1
        else:
            t = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        scale = _norm(t, c.norm).view(-1, *([1] * (x.dim() - 1)))
        return (x + c.eps * t / scale * 0.5).clamp(*self.clip)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None, start: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run: the closest misclassified points found and their distances (inf when
        none was found)."""
        c, n = self.config, len(x)
        view = (-1, *([1] * (x.dim() - 1)))
        cur = self._start(x) if start else x.clone()
        best, dist = x.clone(), torch.full((n,), float("inf"), device=x.device)
        x0, rows = x.flatten(1), torch.arange(n, device=x.device)
        dual = 1 if c.norm == "linf" else 2
        for _ in range(c.steps):
            diff, jac = self._linearise(cur, y, goal)
            gap = diff.abs() / (jac.norm(p=dual, dim=2) + 1e-12)
            k = gap.argmin(1)
            w = jac[rows, k]
            b = (w * cur.flatten(1)).sum(1) - diff[rows, k]
            both = torch.cat((cur.flatten(1), x0))
            d = project_onto_hyperplane(
                both, torch.cat((w, w)), torch.cat((b, b)), c.norm, self.clip
            )
            size = _norm(d, c.norm).clamp_min(1e-8)
            a = (size[:n] / (size[:n] + size[n:])).clamp(0, c.alpha_max).view(view)
            d_cur, d_x = d[:n].view_as(x), d[n:].view_as(x)
            cur = ((cur + c.eta * d_cur) * (1 - a) + (x + c.eta * d_x) * a).clamp(*self.clip)
            with torch.no_grad():
                adv = self.forward(cur).argmax(1) != y
            closer = adv & (_norm(cur - x, c.norm) < dist)
            best = torch.where(closer.view(view), cur, best)
            dist = torch.where(closer, _norm(cur - x, c.norm), dist)
            cur = torch.where(adv.view(view), x + (cur - x) * c.beta, cur)
        return best, dist

    def _goals(self, logits: torch.Tensor) -> list[int | None]:
        """Target ranks to run (None: untargeted)."""
        return [None]

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        adv = x.clone()
        with torch.no_grad():
            logits = self.forward(x)
        robust = logits.argmax(1) == y
        ranks, runs = self._goals(logits), 0
        for r in range(c.restarts):
            todo = robust.nonzero().squeeze(1)
            if len(todo) == 0:
                break
            # one row per (example, target): rows are independent, so this is the targets in
            # turn at once; an example takes its first target (in rank order) within eps
            rows = todo.repeat_interleave(len(ranks))
            goal = None
            if ranks != [None]:
                goal = torch.stack([top_targets(logits[todo], k) for k in ranks], 1).flatten()
            found, dist = self._run(x[rows], y[rows], goal, start=r > 0)
            ok = (dist <= c.eps).view(len(todo), len(ranks))
            first = ok.int().argmax(1)
            found = found.view(len(todo), len(ranks), *x.shape[1:])[torch.arange(len(todo)), first]
            ok = ok.any(1)
            adv[todo[ok]] = found[ok]
            robust[todo[ok]] = False
            runs += len(rows)
        self.record(steps=c.steps, runs=runs)
        return adv


@ATTACKS.register("fab-t")
class FABT(FAB):
    """FAB-T: FAB towards each of the top-`targets` other classes in turn."""

    Config = FABTConfig

    def _goals(self, logits: torch.Tensor) -> list[int | None]:
        return list(range(2, min(self.config.targets, logits.shape[1] - 1) + 2))
