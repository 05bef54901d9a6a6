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

The attacks run on the model's inference form (`nettle.nn.inference.inference_copy`: conv-BN
pairs folded, channels-last weights, checked against the model; not for a randomised model):
the same function up to rounding, and a gradient about half as costly on the digits CNN.

Per attack and epsilon the result also holds the spread of robust accuracy over batches and the
cost: seconds, and forward and backward passes (counted by the attacks' base class). The
masking checks are in `nettle.attack.masking`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nettle.attack.autoattack import with_preset
from nettle.attack.base import create_attack
from nettle.attack.masking import TRANSFER, is_randomised, masking_checks, randomness_warning
from nettle.attack.objectives import Objective, classification
from nettle.attack.result import RobustnessResult, format_robustness
from nettle.attack.tally import Evaluation, Row, batches, mean_of, with_eps
from nettle.nn.inference import inference_copy
from nettle.nn.modes import model_device

__all__ = [
    "THRESHOLDS",
    "RobustnessResult",
    "evaluate_robustness",
    "format_robustness",
    "masking_checks",
]

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # MaxConfidence's confidence thresholds


def _rows(
    model: nn.Module,
    attacks: dict[str, dict[str, Any]],
    surrogate: nn.Module | None,
    surrogate_name: str,
) -> list[Row]:
    rows = [Row(n, n, dict(o), model, False) for n, o in attacks.items()]
    if surrogate is not None:
        rows += [
            Row(f"{n}{TRANSFER}{surrogate_name})", n, dict(o), surrogate, True)
            for n, o in attacks.items()
        ]
    return rows


def _inference_form(model: nn.Module, data: Any, seed: int) -> tuple[nn.Module, bool]:
    """`model`'s inference copy (`nettle.nn.inference`) unless it is randomised (tracing
    would freeze Python-level randomness): the same function up to rounding; and whether it
    is randomised (two passes over the first 16 examples differ)."""
    x, _ = next(iter(batches(data, 16)))
    x = x.to(model_device(model))
    if is_randomised(model, x, seed):
        return model, True
    return inference_copy(model, x), False


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
    model, randomised = _inference_form(model, data, seed)
    if not per_attack:
        if surrogate is not None:
            raise ValueError("transfer attacks (surrogate=) need per_attack=True")
        return _worst_case_by_bisection(
            model, data, attacks, eps_list, batch_size, seed, checks, objective, randomised
        )
    eps = sorted(float(e) for e in eps_list)
    ev = Evaluation(
        model, _rows(model, attacks, surrogate, surrogate_name), objective, seed, recheck, progress
    )
    worst: dict[float, list[torch.Tensor]] = {e: [] for e in eps}
    clean, xs, ys, clean_err = [], [], [], [0.0, 0.0]
    for x, y in batches(data, batch_size):
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
        clean_accuracy=mean_of(clean),
        eps=eps,
        worst={e: mean_of(v) for e, v in worst.items()},
        warnings=ev.warnings,
        examples=len(y_all),
        attacked=ev.attacked,
        error_name=objective.error_name,
        clean_error=clean_err[0] / max(clean_err[1], 1.0) if objective.errors else None,
        randomised=randomised,
        objective=objective.name,
    )
    ev.fill(result, thresholds)
    result.warnings += _checks(model, x_all, y_all, result, attacks, seed, objective, checks)
    return result


def _checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: RobustnessResult,
    attacks: dict[str, dict[str, Any]],
    seed: int,
    objective: Objective,
    checks: bool,
) -> list[str]:
    """A randomised model attacked without EOT (always flagged: it is cheap to tell), then the
    masking checks when asked; a randomised model's checks run with the attacks' largest EOT."""
    warning = randomness_warning(attacks) if result.randomised else None
    warnings = [warning] if warning else []
    if not checks or not result.eps:
        return warnings
    eot = max([int(o.get("eot_iter", 1)) for o in attacks.values()] + [1])
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
    randomised: bool,
) -> RobustnessResult:
    """Worst-case robust accuracy at every epsilon, with a bisection per example."""
    eps = sorted(float(e) for e in eps_list)
    ev = Evaluation(model, [], objective, seed, 0, None)
    thresholds, clean, xs, ys = [], [], [], []
    for x, y in batches(data, batch_size):
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
                    opts = with_eps(name, options, eps[m])
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
        clean_accuracy=mean_of(clean),
        eps=eps,
        worst={e: float((t > k).float().mean()) for k, e in enumerate(eps)},
        examples=len(t),
        attacked=ev.attacked,
        objective=objective.name,
    )
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    result.randomised = randomised
    result.warnings = _checks(model, x_all, y_all, result, attacks, seed, objective, checks)
    return result
