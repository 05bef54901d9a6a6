"""The bookkeeping of a robustness evaluation: result rows, per-batch state, and the runner
that attacks a batch row by row, counting time and passes (used by `nettle.attack.evaluate`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nettle.attack.base import ATTACKS, AttackResult, create_attack, eval_mode
from nettle.attack.eot import seeded_randomness
from nettle.attack.objectives import Objective
from nettle.attack.result import RobustnessResult
from nettle.nn.modes import model_device

__all__ = ["Batch", "Evaluation", "Row", "batches", "has_eps", "mean_of", "spread_of", "with_eps"]


def batches(data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if hasattr(data, "tensors"):
        yield from batches(tuple(data.tensors), batch_size)
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(data, batch_size=batch_size)


def _sync(*devices: torch.device) -> None:
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)


@dataclass
class Row:
    """One result row: an attack crafted on `source` (the model, or a surrogate) and scored on
    the model; per-epsilon tallies over the batches."""

    name: str
    attack: str
    options: dict[str, Any]
    source: nn.Module
    transfer: bool
    robust: dict[float, list[torch.Tensor]] = field(default_factory=dict)
    cost: dict[float, dict[str, float]] = field(default_factory=dict)
    errors: dict[float, list[float]] = field(default_factory=dict)  # [errors, units]
    conf: dict[float, list[torch.Tensor]] = field(default_factory=dict)

    def spend(self, eps: float, seconds: float, forwards: int, backwards: int) -> None:
        c = self.cost.setdefault(eps, {"seconds": 0.0, "forwards": 0, "backwards": 0})
        c["seconds"] += seconds
        c["forwards"] += forwards
        c["backwards"] += backwards


@dataclass
class Batch:
    """One batch: inputs, labels, what the model gets right, and each row's broken mask."""

    x: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor
    broken: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]  # per-example errors of each row's current input
    units: torch.Tensor | None
    conf: dict[str, torch.Tensor]
    dist: dict[str, torch.Tensor] = field(default_factory=dict)


class Evaluation:
    """The state of one `evaluate_robustness` call (see there)."""

    def __init__(
        self,
        model: nn.Module,
        rows: list[Row],
        objective: Objective,
        seed: int,
        recheck: int,
        progress: Any,
    ) -> None:
        self.model, self.rows, self.objective = model, rows, objective
        self.seed, self.recheck, self.progress = seed, recheck, progress
        self.dev = model_device(model)
        self.kw = {}
        if objective.name != "classification":
            self.kw = {"loss_fn": objective.loss_fn, "success_fn": objective.success_fn}
        self.warnings: list[str] = []
        self.attacked = 0
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output at `x` (a randomised model's draws seeded from `seed`)."""
        with eval_mode(self.model), seeded_randomness(self.generator):
            return self.model(x.to(self.dev))

    def start(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """Score the clean batch and set up every row's state."""
        out, yd = self._output(x), y.to(self.dev)
        correct = (~self.objective.success_fn(out, yd)).cpu()
        errors, units = torch.zeros(len(y)), None
        if self.objective.errors is not None:
            e, units = self.objective.errors(out, yd)
            errors = e.float().cpu()
        conf = torch.zeros(len(y))
        if any(r.attack == "maxconf" for r in self.rows):
            probs = out.float().softmax(1).cpu()
            conf = torch.where(correct, 0.0, probs.max(1).values)
        names = [r.name for r in self.rows]
        return Batch(
            x,
            y,
            correct,
            {n: ~correct for n in names},
            {n: errors.clone() for n in names},
            units.cpu().float() if units is not None else None,
            {n: conf.clone() for n in names},
        )

    def attack(
        self, row: Row, b: Batch, idx: torch.Tensor, eps: float | None, at: float
    ) -> AttackResult:
        """Run `row`'s attack on the examples `idx` at `eps`; its cost goes to the row at `at`."""
        opts = with_eps(row.attack, row.options, eps) if eps is not None else dict(row.options)
        attack = create_attack(row.attack, row.source, seed=self.seed, **self.kw, **opts)
        devs = {self.dev, model_device(row.source)}
        _sync(*devs)
        t0 = time.perf_counter()
        res = attack(b.x[idx], b.y[idx])
        forwards = res.forwards
        if row.transfer:  # crafted on the surrogate, scored on the model
            out = self._output(res.x_adv)
            res.success = self.objective.success_fn(out, b.y[idx].to(self.dev)).cpu()
            forwards += len(idx)
        _sync(*devs)
        row.spend(at, time.perf_counter() - t0, forwards, res.backwards)
        self.attacked += len(idx)
        res.success = res.success.cpu()
        return res

    def _note_errors(self, row: Row, b: Batch, idx: torch.Tensor, res: AttackResult) -> None:
        hit = idx[res.success]
        if self.objective.errors is None or len(hit) == 0:
            return
        out = self._output(res.x_adv[res.success])
        e, _ = self.objective.errors(out, b.y[hit].to(self.dev))
        b.errors[row.name][hit] = e.float().cpu()

    def step(self, row: Row, b: Batch, eps: float, first: bool) -> None:
        """Attack batch `b` with `row` at `eps` (the epsilons come in increasing order)."""
        name, correct = row.name, b.correct.nonzero().flatten()
        if not has_eps(row.attack):  # runs once; counts where its L-inf distance fits
            if first:
                b.dist[name] = torch.full((len(b.y),), float("inf"))
                if len(correct):
                    res = self.attack(row, b, correct, None, eps)
                    inf = torch.full_like(res.linf, float("inf"))
                    b.dist[name][correct] = torch.where(res.success, res.linf.cpu(), inf)
                    self._note_errors(row, b, correct, res)
            b.broken[name] |= b.dist[name] <= eps + 1e-9
        elif row.attack == "maxconf" and not row.transfer:  # every correct example
            if len(correct):
                res = self.attack(row, b, correct, eps, eps)
                b.broken[name][correct] |= res.success
                conf = res.extras["confidence"].cpu()
                b.conf[name][correct] = torch.maximum(b.conf[name][correct], conf)
                self._note_errors(row, b, correct, res)
        else:
            earlier = b.broken[name] & b.correct
            todo = (~b.broken[name]).nonzero().flatten()
            if len(todo):
                res = self.attack(row, b, todo, eps, eps)
                b.broken[name][todo[res.success]] = True
                self._note_errors(row, b, todo, res)
            if not first and self.recheck and earlier.any() and not row.transfer:
                self._recheck(row, b, earlier, eps)
        row.robust.setdefault(eps, []).append(~b.broken[name])
        if b.units is not None:
            tally = row.errors.setdefault(eps, [0.0, 0.0])
            tally[0] += float(b.errors[name].sum())
            tally[1] += float(b.units.sum())
        if row.attack == "maxconf" and not row.transfer:
            row.conf.setdefault(eps, []).append(b.conf[name].clone())
        if self.progress:
            self.progress(name, eps)

    def _recheck(self, row: Row, b: Batch, earlier: torch.Tensor, eps: float) -> None:
        idx = earlier.nonzero().flatten()[: self.recheck]
        survived = ~self.attack(row, b, idx, eps, eps).success
        if survived.float().mean() > 0.1:
            self.warnings.append(
                f"{row.name}: {int(survived.sum())}/{len(idx)} examples broken at a smaller "
                f"epsilon resist at eps {eps:g} (accuracy rises with epsilon)"
            )

    def fill(self, result: RobustnessResult, thresholds: Sequence[float]) -> None:
        """Accuracy, spread, cost, error rates and confidence curves of every row."""
        for row in self.rows:
            result.accuracy[row.name] = {e: mean_of(v) for e, v in row.robust.items()}
            result.spread[row.name] = {e: spread_of(v) for e, v in row.robust.items()}
            zero = {"seconds": 0.0, "forwards": 0, "backwards": 0}
            result.cost[row.name] = {e: row.cost.get(e, dict(zero)) for e in result.eps}
            if row.errors:
                result.errors[row.name] = {e: s / max(u, 1.0) for e, (s, u) in row.errors.items()}
            if row.conf:
                result.confidence[row.name] = {
                    e: {t: float((torch.cat(c) < t).float().mean()) for t in thresholds}
                    for e, c in row.conf.items()
                }


def mean_of(parts: list[torch.Tensor]) -> float:
    return float(torch.cat(parts).float().mean()) if parts else 0.0


def spread_of(parts: list[torch.Tensor]) -> float | None:
    """Standard deviation of the per-batch accuracies (None with fewer than two batches)."""
    if len(parts) < 2:
        return None
    return float(torch.stack([p.float().mean() for p in parts]).std())


def has_eps(name: str) -> bool:
    return "eps" in {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}


def with_eps(name: str, options: dict[str, Any], eps: float) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}
    if "eps" not in fields:
        return dict(options)
    out = {**options, "eps": eps}
    if "alpha" in fields and "alpha" not in options:
        out["alpha"] = eps / 4  # a step size that scales with the ball
    return out
