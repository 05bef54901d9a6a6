"""Sanity checks that flag gradient masking (Athalye, Carlini & Wagner 2018, arXiv:1802.00420;
Carlini et al. 2019, "On evaluating adversarial robustness", arXiv:1902.06705).

Each check returns warnings with their numbers, never silently:
- an unbounded attack (PGD with epsilon covering the whole input range) must reach ~0%; an
  example counts as fooled once an iterate fools it (checked every `UNBOUNDED_CHUNK` steps,
  fooled examples leave the batch): the ball covers the whole range, so the projection never
  binds and continuing from the last iterate without a random start is the same run;
- more PGD steps and restarts must not raise robust accuracy, on a fixed subset (the first
  `STRONG_EXAMPLES` correctly classified examples, as many as `evaluate_robustness` rechecks
  for monotonicity: a masked model shows it on any subset, and the 40-step, 3-restart run
  costs up to 12 times the 10-step one per example);
- a single-step attack (FGSM) must not beat an iterative one (PGD) at the same epsilon;
- a gradient-free attack (SPSA) must not beat a gradient one, when both are evaluated;
- an attack crafted on a surrogate (transfer) must not beat the same attack run white-box;
- a randomised model (two forward passes of the same input differ) must be attacked with EOT
  (`eot_iter > 1`): one random draw's gradient understates the attack.
(`nettle.attack.evaluate` also re-attacks examples broken at a smaller epsilon: accuracy must
fall with epsilon.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nettle.attack.base import ATTACKS, create_attack, eval_mode
from nettle.attack.eot import seeded_randomness
from nettle.attack.objectives import Objective, classification
from nettle.attack.result import RobustnessResult
from nettle.nn.modes import model_device

__all__ = ["TRANSFER", "is_randomised", "masking_checks", "randomness_warning"]

TRANSFER = " (transfer from "  # a transfer row is named "<attack> (transfer from <surrogate>)"
UNBOUNDED_STEPS, UNBOUNDED_CHUNK = 50, 5  # the unbounded PGD's steps, checked every chunk
STRONG_EXAMPLES = 64  # examples of the more-steps-and-restarts check


@torch.no_grad()
def is_randomised(model: nn.Module, x: torch.Tensor, seed: int = 0) -> bool:
    """Whether two forward passes of `x` through `model` in eval mode differ.

    The module modes and torch's global random state are restored afterwards.
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with eval_mode(model), seeded_randomness(generator):
        first, second = model(x), model(x)
    return not torch.equal(first, second)


def randomness_warning(attacks: dict[str, dict[str, Any]]) -> str | None:
    """The warning for a randomised model, naming the gradient attacks that ran without EOT."""
    plain = [
        n
        for n, o in attacks.items()
        if ATTACKS.get(n).supports_eot and int(o.get("eot_iter", 1)) < 2
    ]
    if not plain:
        return None
    return (
        f"the model is randomised (two forward passes of the same input differ) and "
        f"{', '.join(plain)} ran without EOT: set eot_iter (e.g. 20) to average gradients over "
        "its randomness, or the robustness is overstated"
    )


def _pgd_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, extra: dict, **cfg: Any
) -> float:
    res = create_attack("pgd", model, seed=seed, **extra, **cfg)(x, y)
    return 1.0 - float(res.success.float().mean())


def _unbounded_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, extra: dict
) -> float:
    """The share of `x` that an unbounded PGD (eps 1.0, alpha 0.1, `UNBOUNDED_STEPS` steps,
    random start) never fools at any iterate checked (every `UNBOUNDED_CHUNK` steps)."""
    adv, alive, done = x, torch.arange(len(x)), 0
    while done < UNBOUNDED_STEPS and len(alive):
        steps = min(UNBOUNDED_CHUNK, UNBOUNDED_STEPS - done)
        start = done == 0
        options = {"eps": 1.0, "alpha": 0.1, "steps": steps, "random_start": start}
        res = create_attack("pgd", model, seed=seed, **extra, **options)(adv[alive], y[alive])
        adv = adv.clone()
        adv[alive] = res.x_adv.to(adv.dtype)
        alive, done = alive[~res.success], done + steps
    return len(alive) / len(x)


def _compare(result: RobustnessResult, strong: str, weak: str, tol: float, say: str) -> list[str]:
    """Warnings where the weaker attack `weak` leaves less accuracy than `strong`."""
    out = []
    if weak in result.accuracy and strong in result.accuracy:
        for eps in result.eps:
            w, s = result.accuracy[weak][eps], result.accuracy[strong][eps]
            if w + tol < s:
                out.append(say.format(eps=eps, weak=w, strong=s))
    return out


def masking_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: RobustnessResult,
    seed: int = 0,
    tol: float = 0.02,
    objective: Objective | None = None,
    eot_iter: int = 1,
    strong_examples: int = STRONG_EXAMPLES,
) -> list[str]:
    """Warnings for signs of gradient masking beyond monotonicity (see the module docstring).

    `x`, `y` are the evaluated examples; the PGD runs of the checks use `objective` and average
    over `eot_iter` passes (a randomised model's checks need EOT as much as its attacks);
    `strong_examples`: the first correctly classified examples that the more-steps-and-restarts
    check attacks.
    """
    objective = objective or classification()
    extra = {"eot_iter": eot_iter}
    if objective.name != "classification":
        extra |= {"loss_fn": objective.loss_fn, "success_fn": objective.success_fn}
    warnings: list[str] = []
    dev = model_device(model)
    with torch.no_grad(), eval_mode(model):
        keep = (~objective.success_fn(model(x.to(dev)), y.to(dev))).cpu()
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return warnings
    unbounded = _unbounded_accuracy(model, x, y, seed, extra)
    if unbounded > 0.05:
        warnings.append(
            f"an unbounded PGD (eps 1.0, {UNBOUNDED_STEPS} steps) leaves {unbounded:.1%} of "
            "correctly classified examples correct (expected ~0%): gradients look masked"
        )
    e, x, y = result.eps[-1], x[:strong_examples], y[:strong_examples]
    base = _pgd_accuracy(model, x, y, seed, extra, eps=e, alpha=e / 4, steps=10)
    strong = _pgd_accuracy(model, x, y, seed, extra, eps=e, alpha=e / 8, steps=40, restarts=3)
    if strong > base + tol:
        warnings.append(
            f"more PGD steps/restarts raised accuracy at eps {e:g} on {len(x)} examples "
            f"({base:.1%} -> {strong:.1%})"
        )
    warnings += _compare(
        result, "pgd", "fgsm", tol, "FGSM beats PGD at eps {eps:g} ({weak:.1%} < {strong:.1%})"
    )
    warnings += _compare(
        result, "pgd", "spsa", tol, "black-box spsa beats white-box PGD at eps {eps:g}"
    )
    for row in result.accuracy:
        if TRANSFER in row:
            white = row.split(TRANSFER)[0]
            warnings += _compare(
                result,
                white,
                row,
                tol,
                f"{row} beats white-box {white} at eps {{eps:g}} ({{weak:.1%}} < {{strong:.1%}}):"
                " the target's gradients look masked",
            )
    return warnings
