"""Robustness evaluation: robust accuracy per attack and epsilon, worst case, spread and cost,
transfer attacks, masking checks.

`evaluate_robustness` attacks only what is still unbroken: epsilons are processed in increasing
order and an example an attack broke at a smaller epsilon counts as broken by it at every larger
one (so it is not attacked again), and examples the model already gets wrong are never attacked.
The worst case over attacks (`worst`) is an example broken by any attack. To check the
monotonicity this assumes, a sample of already-broken examples is re-attacked at each larger
epsilon. MaxConfidence is the exception: it attacks every correct example at every epsilon,
since it looks for the most confident misclassification, not just one.

Any model: `objective` (`nettle.attack.objectives`) gives the attacks their loss and success
criterion (CTC lines, segmentation, ...) and, where it has one, an error rate reported per
attack and epsilon (e.g. the character error rate). Randomised models: attack options take
`eot_iter`; a model whose two forward passes differ is flagged when a gradient attack ran
without EOT. Transfer: with `surrogate=`, every attack is also crafted on the surrogate (on its
own device) and scored on the model, as its own row "<attack> (transfer from <name>)".

Per attack and epsilon the result also holds the spread of robust accuracy over batches and the
cost: seconds, and forward and backward passes (counted by the attacks' base class). The
masking checks are in `nettle.attack.masking`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nettle.attack.autoattack import with_preset
from nettle.attack.base import ATTACKS, AttackResult, create_attack, eval_mode
from nettle.attack.eot import seeded_randomness
from nettle.attack.masking import TRANSFER, is_randomised, masking_checks, randomness_warning
from nettle.attack.objectives import Objective, classification
from nettle.attack.result import RobustnessResult, format_robustness

__all__ = [
    "THRESHOLDS",
    "RobustnessResult",
    "evaluate_robustness",
    "format_robustness",
    "masking_checks",
]

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # MaxConfidence's confidence thresholds


def _batches(data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if hasattr(data, "tensors"):
        yield from _batches(tuple(data.tensors), batch_size)
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(data, batch_size=batch_size)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sync(*devices: torch.device) -> None:
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)


@dataclass
class _Row:
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
class _Batch:
    """One batch: inputs, labels, what the model gets right, and each row's broken mask."""

    x: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor
    broken: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]  # per-example errors of each row's current input
    units: torch.Tensor | None
    conf: dict[str, torch.Tensor]
    dist: dict[str, torch.Tensor] = field(default_factory=dict)


class _Evaluation:
    """The state of one `evaluate_robustness` call (see there)."""

    def __init__(
        self,
        model: nn.Module,
        rows: list[_Row],
        objective: Objective,
        seed: int,
        recheck: int,
        progress: Any,
    ) -> None:
        self.model, self.rows, self.objective = model, rows, objective
        self.seed, self.recheck, self.progress = seed, recheck, progress
        self.dev = _device(model)
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

    def start(self, x: torch.Tensor, y: torch.Tensor) -> _Batch:
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
        return _Batch(
            x,
            y,
            correct,
            {n: ~correct for n in names},
            {n: errors.clone() for n in names},
            units.cpu().float() if units is not None else None,
            {n: conf.clone() for n in names},
        )

    def attack(
        self, row: _Row, b: _Batch, idx: torch.Tensor, eps: float | None, at: float
    ) -> AttackResult:
        """Run `row`'s attack on the examples `idx` at `eps`; its cost goes to the row at `at`."""
        opts = _with_eps(row.attack, row.options, eps) if eps is not None else dict(row.options)
        attack = create_attack(row.attack, row.source, seed=self.seed, **self.kw, **opts)
        devs = {self.dev, _device(row.source)}
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

    def _note_errors(self, row: _Row, b: _Batch, idx: torch.Tensor, res: AttackResult) -> None:
        hit = idx[res.success]
        if self.objective.errors is None or len(hit) == 0:
            return
        out = self._output(res.x_adv[res.success])
        e, _ = self.objective.errors(out, b.y[hit].to(self.dev))
        b.errors[row.name][hit] = e.float().cpu()

    def step(self, row: _Row, b: _Batch, eps: float, first: bool) -> None:
        """Attack batch `b` with `row` at `eps` (the epsilons come in increasing order)."""
        name, correct = row.name, b.correct.nonzero().flatten()
        if not _has_eps(row.attack):  # runs once; counts where its L-inf distance fits
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

    def _recheck(self, row: _Row, b: _Batch, earlier: torch.Tensor, eps: float) -> None:
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
            result.accuracy[row.name] = {e: _mean(v) for e, v in row.robust.items()}
            result.spread[row.name] = {e: _spread(v) for e, v in row.robust.items()}
            zero = {"seconds": 0.0, "forwards": 0, "backwards": 0}
            result.cost[row.name] = {e: row.cost.get(e, dict(zero)) for e in result.eps}
            if row.errors:
                result.errors[row.name] = {e: s / max(u, 1.0) for e, (s, u) in row.errors.items()}
            if row.conf:
                result.confidence[row.name] = {
                    e: {t: float((torch.cat(c) < t).float().mean()) for t in thresholds}
                    for e, c in row.conf.items()
                }


def _mean(parts: list[torch.Tensor]) -> float:
    return float(torch.cat(parts).float().mean()) if parts else 0.0


def _spread(parts: list[torch.Tensor]) -> float | None:
    """Standard deviation of the per-batch accuracies (None with fewer than two batches)."""
    if len(parts) < 2:
        return None
    return float(torch.stack([p.float().mean() for p in parts]).std())


def _has_eps(name: str) -> bool:
    return "eps" in {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}


def _with_eps(name: str, options: dict[str, Any], eps: float) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}
    if "eps" not in fields:
        return dict(options)
    out = {**options, "eps": eps}
    if "alpha" in fields and "alpha" not in options:
        out["alpha"] = eps / 4  # a step size that scales with the ball
    return out


def _rows(
    model: nn.Module,
    attacks: dict[str, dict[str, Any]],
    surrogate: nn.Module | None,
    surrogate_name: str,
) -> list[_Row]:
    rows = [_Row(n, n, dict(o), model, False) for n, o in attacks.items()]
    if surrogate is not None:
        rows += [
            _Row(f"{n}{TRANSFER}{surrogate_name})", n, dict(o), surrogate, True)
            for n, o in attacks.items()
        ]
    return rows


def evaluate_robustness(
    model: nn.Module,
    data: Any,
    attacks: dict[str, dict[str, Any]],
    eps_list: Sequence[float],
    *,
    batch_size: int = 256,
    seed: int = 0,
    checks: bool = True,
    recheck: int = 64,
    per_attack: bool = True,
    progress: Any = None,
    objective: Objective | None = None,
    surrogate: nn.Module | None = None,
    surrogate_name: str = "surrogate",
    thresholds: Sequence[float] = THRESHOLDS,
    preset: str | None = None,
) -> RobustnessResult:
    """Robust accuracy of `model` on `data` for every attack and epsilon.

    Args:
        model: the model (inputs in [0, 1]); every module's mode is restored.
        data: (x, y) tensors, a `TensorDataset` or any dataset of (x, y).
        attacks: attack name -> options (without `eps`, which comes from `eps_list`; with
            `eot_iter` for a randomised model). An attack without an `eps` option (CW) runs
            once; an example counts as broken by it at every epsilon at least the L-infinity
            size of its successful perturbation.
        eps_list: the epsilons.
        checks: run the gradient-masking checks (`nettle.attack.masking`).
        recheck: broken examples re-attacked per larger epsilon to test monotonicity.
        per_attack: exact curves for every attack (each attack skips only what it broke).
            `False` computes only the worst case, faster: each example's breaking epsilon is
            found by bisection over `eps_list`, running the attacks in the given order (cheap
            first) and stopping at the first that succeeds; `accuracy` is then empty.
        progress: optional callback `(row name, eps)`.
        objective: the attacks' loss and success criterion (default: classification).
        surrogate: a model to craft transfer attacks on (on its own device); each attack is
            also reported as "<attack> (transfer from <surrogate_name>)".
        thresholds: confidence thresholds of MaxConfidence's curves.
        preset: "autoattack-standard" or "autoattack-rand": adds that AutoAttack ensemble as
            the attack "autoattack" (its options in `attacks` kept, `nettle.attack.autoattack`).
    """
    attacks = with_preset(attacks, preset)
    objective = objective or classification()
    if not per_attack:
        if surrogate is not None:
            raise ValueError("transfer attacks (surrogate=) need per_attack=True")
        return _worst_case_by_bisection(
            model, data, attacks, eps_list, batch_size, seed, checks, objective
        )
    eps = sorted(float(e) for e in eps_list)
    ev = _Evaluation(
        model, _rows(model, attacks, surrogate, surrogate_name), objective, seed, recheck, progress
    )
    worst: dict[float, list[torch.Tensor]] = {e: [] for e in eps}
    clean, xs, ys, clean_err = [], [], [], [0.0, 0.0]
    for x, y in _batches(data, batch_size):
        b = ev.start(x, y)
        if b.units is not None:
            clean_err[0] += float(b.errors[ev.rows[0].name].sum()) if ev.rows else 0.0
            clean_err[1] += float(b.units.sum())
        for i, e in enumerate(eps):
            for row in ev.rows:
                ev.step(row, b, e, i == 0)
            worst[e].append(~torch.stack([b.broken[r.name] for r in ev.rows]).any(0))
        clean.append(b.correct)
        xs.append(x)
        ys.append(y)
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    result = RobustnessResult(
        clean_accuracy=_mean(clean),
        eps=eps,
        worst={e: _mean(v) for e, v in worst.items()},
        warnings=ev.warnings,
        examples=len(y_all),
        attacked=ev.attacked,
        error_name=objective.error_name,
        clean_error=clean_err[0] / max(clean_err[1], 1.0) if objective.errors else None,
        randomised=is_randomised(model, x_all[:16].to(ev.dev), seed),
        objective=objective.name,
    )
    ev.fill(result, thresholds)
    if checks and eps:
        result.warnings += _checks(model, x_all, y_all, result, attacks, seed, objective)
    return result


def _checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: RobustnessResult,
    attacks: dict[str, dict[str, Any]],
    seed: int,
    objective: Objective,
) -> list[str]:
    """The masking checks; a randomised model's checks run with the attacks' largest EOT."""
    eot = max([int(o.get("eot_iter", 1)) for o in attacks.values()] + [1])
    warnings = []
    if result.randomised:
        warning = randomness_warning(attacks)
        warnings += [warning] if warning else []
    return warnings + masking_checks(
        model, x, y, result, seed, objective=objective, eot_iter=eot if result.randomised else 1
    )


def _worst_case_by_bisection(
    model: nn.Module,
    data: Any,
    attacks: dict[str, dict[str, Any]],
    eps_list: Sequence[float],
    batch_size: int,
    seed: int,
    checks: bool,
    objective: Objective,
) -> RobustnessResult:
    """Worst-case robust accuracy at every epsilon, with a bisection per example."""
    eps = sorted(float(e) for e in eps_list)
    ev = _Evaluation(model, [], objective, seed, 0, None)
    thresholds, clean, xs, ys = [], [], [], []
    for x, y in _batches(data, batch_size):
        correct = ev.start(x, y).correct
        # the breaking index lies in [lo, hi]; hi = len(eps) means robust at every epsilon
        lo = torch.zeros(len(y), dtype=torch.long)
        hi = torch.where(correct, len(eps), 0)
        while bool((lo < hi).any()):
            mid = torch.where(lo < hi, (lo + hi) // 2, -1)
            for m in mid[mid >= 0].unique().tolist():
                idx = (mid == m).nonzero().flatten()
                broken = torch.zeros(len(idx), dtype=torch.bool)
                for name, options in attacks.items():
                    todo = idx[~broken]
                    if len(todo) == 0:
                        break
                    opts = _with_eps(name, options, eps[m])
                    attack = create_attack(name, model, seed=seed, **ev.kw, **opts)
                    broken[~broken] = attack(x[todo], y[todo]).success.cpu()
                    ev.attacked += len(todo)
                hi[idx[broken]] = m
                lo[idx[~broken]] = m + 1
        thresholds.append(hi)
        clean.append(correct)
        xs.append(x)
        ys.append(y)
    t = torch.cat(thresholds)
    result = RobustnessResult(
        clean_accuracy=_mean(clean),
        eps=eps,
        worst={e: float((t > k).float().mean()) for k, e in enumerate(eps)},
        examples=len(t),
        attacked=ev.attacked,
        objective=objective.name,
    )
    if checks and eps:
        x_all, y_all = torch.cat(xs), torch.cat(ys)
        result.randomised = is_randomised(model, x_all[:16].to(ev.dev), seed)
        result.warnings = _checks(model, x_all, y_all, result, attacks, seed, objective)
    return result
