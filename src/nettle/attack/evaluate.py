"""Robustness evaluation: robust accuracy per attack and epsilon, worst case, masking checks.

`evaluate_robustness` attacks only what is still unbroken: epsilons are processed in increasing
order and an example an attack broke at a smaller epsilon counts as broken by it at every larger
one (so it is not attacked again), and misclassified clean examples are never attacked. The
worst case over attacks (`worst`) is an example broken by any attack. To check the monotonicity
this assumes, a sample of already-broken examples is re-attacked at each larger epsilon.

Sanity checks that flag gradient masking (Athalye et al. 2018; Carlini et al. 2019), reported as
warnings with their numbers, never silently:
- an example broken at a smaller epsilon must stay broken at a larger one;
- an unbounded attack (PGD with epsilon covering the whole input range) must reach ~0%;
- more PGD steps and restarts must not raise robust accuracy;
- a single-step attack (FGSM) must not beat an iterative one (PGD) at the same epsilon;
- a gradient-free attack must not beat a gradient one, when both are evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import torch
from torch import nn

from nettle.attack.base import create_attack

__all__ = ["RobustnessResult", "evaluate_robustness", "format_robustness", "masking_checks"]


@dataclass
class RobustnessResult:
    """Accuracies in [0, 1]: `accuracy[attack][eps]`, `worst[eps]`, and masking warnings."""

    clean_accuracy: float
    eps: list[float]
    accuracy: dict[str, dict[float, float]] = field(default_factory=dict)
    worst: dict[float, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    examples: int = 0
    attacked: int = 0  # attack calls x examples actually attacked

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean_accuracy": self.clean_accuracy,
            "eps": self.eps,
            "accuracy": {a: {str(e): v for e, v in c.items()} for a, c in self.accuracy.items()},
            "worst": {str(e): v for e, v in self.worst.items()},
            "warnings": self.warnings,
            "examples": self.examples,
            "attacked": self.attacked,
        }

    def __repr__(self) -> str:
        eps = ", ".join(f"{e:g}" for e in self.eps)
        worst = ", ".join(f"{self.worst[e]:.1%}" for e in self.eps if e in self.worst)
        return (
            f"RobustnessResult(clean={self.clean_accuracy:.1%}, examples={self.examples}, "
            f"eps=[{eps}], worst=[{worst}], attacks={list(self.accuracy)}, "
            f"warnings={len(self.warnings)})"
        )

    def _repr_html_(self) -> str:
        head = "".join(f"<th>eps {e:g}</th>" for e in self.eps)
        curves = [*self.accuracy.items(), ("worst", self.worst)]
        body = "".join(
            f"<tr><th>{escape(name)}</th>"
            + "".join(f"<td>{c[e]:.1%}</td>" if e in c else "<td></td>" for e in self.eps)
            + "</tr>"
            for name, c in curves
        )
        span = len(self.eps) + 1
        body += "".join(
            f'<tr><td colspan="{span}">warning: {escape(w)}</td></tr>' for w in self.warnings
        )
        caption = f"clean accuracy {self.clean_accuracy:.1%} on {self.examples} examples"
        return f"<table><caption>{caption}</caption><tr><th>attack</th>{head}</tr>{body}</table>"


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
) -> RobustnessResult:
    """Robust accuracy of `model` on `data` for every attack and epsilon.

    Args:
        model: the classifier (inputs in [0, 1]); its mode is restored.
        data: (x, y) tensors, a `TensorDataset` or any dataset of (x, y).
        attacks: attack name -> options (without `eps`, which comes from `eps_list`). An attack
            without an `eps` option (CW) runs once; an example counts as broken by it at every
            epsilon at least the L-infinity size of its successful perturbation.
        eps_list: the epsilons.
        checks: run the gradient-masking checks.
        recheck: broken examples re-attacked per larger epsilon to test monotonicity.
        per_attack: exact curves for every attack (each attack skips only what it broke).
            `False` computes only the worst case, faster: each example's breaking epsilon is
            found by bisection over `eps_list`, running the attacks in the given order (cheap
            first) and stopping at the first that succeeds; `accuracy` is then empty.
        progress: optional callback `(attack, eps)`.
    """
    if not per_attack:
        return _worst_case_by_bisection(model, data, attacks, eps_list, batch_size, seed, checks)
    eps_sorted = sorted(float(e) for e in eps_list)
    curves = {name: {e: [] for e in eps_sorted} for name in attacks}
    worst = {e: [] for e in eps_sorted}
    clean, xs, ys, warnings = [], [], [], []
    total = attacked = 0
    dev = next(model.parameters()).device
    for x, y in _batches(data, batch_size):
        was = model.training
        with torch.no_grad():
            correct = (model.eval()(x.to(dev)).argmax(1) == y.to(dev)).cpu()
        model.train(was)
        clean.append(correct)
        xs.append(x)
        ys.append(y)
        broken = {name: ~correct for name in attacks}
        # attacks without an epsilon (CW) run once; they count at every epsilon their
        # L-infinity distance fits in
        dist = {}
        for name, options in attacks.items():
            if not _has_eps(name) and correct.any():
                res = create_attack(name, model, seed=seed, **options)(x[correct], y[correct])
                d = torch.full((len(y),), float("inf"))
                linf = (res.x_adv.cpu() - x[correct]).flatten(1).abs().amax(1)
                d[correct] = torch.where(
                    res.success.cpu(), linf, torch.full_like(linf, float("inf"))
                )
                dist[name] = d
                attacked += int(correct.sum())
        for e in eps_sorted:
            for name, options in attacks.items():
                if name in dist:
                    broken[name] = broken[name] | (dist[name] <= e + 1e-9)
                    curves[name][e].append(~broken[name])
                    if progress:
                        progress(name, e)
                    continue
                attack = create_attack(name, model, seed=seed, **_with_eps(name, options, e))
                todo = ~broken[name]
                if todo.any():
                    hit = torch.zeros_like(todo)
                    hit[todo] = attack(x[todo], y[todo]).success.cpu()
                    attacked += int(todo.sum())
                    earlier = broken[name] & correct
                    broken[name] = broken[name] | hit
                else:
                    earlier = broken[name] & correct
                if e != eps_sorted[0] and recheck and earlier.any():
                    idx = earlier.nonzero().flatten()[:recheck]
                    survived = ~attack(x[idx], y[idx]).success.cpu()
                    attacked += len(idx)
                    if survived.float().mean() > 0.1:
                        warnings.append(
                            f"{name}: {int(survived.sum())}/{len(idx)} examples broken at a "
                            f"smaller epsilon resist at eps {e:g} (accuracy rises with epsilon)"
                        )
                curves[name][e].append(~broken[name])
                if progress:
                    progress(name, e)
            worst[e].append(~torch.stack([b for b in broken.values()]).any(0))
        total += len(y)
    result = RobustnessResult(
        clean_accuracy=float(torch.cat(clean).float().mean()),
        eps=eps_sorted,
        accuracy={a: {e: _mean(v) for e, v in c.items()} for a, c in curves.items()},
        worst={e: _mean(v) for e, v in worst.items()},
        warnings=warnings,
        examples=total,
        attacked=attacked,
    )
    if checks and eps_sorted:
        result.warnings += masking_checks(model, torch.cat(xs), torch.cat(ys), result, seed)
    return result


def _worst_case_by_bisection(
    model: nn.Module,
    data: Any,
    attacks: dict[str, dict[str, Any]],
    eps_list: Sequence[float],
    batch_size: int,
    seed: int,
    checks: bool,
) -> RobustnessResult:
    """Worst-case robust accuracy at every epsilon, with a bisection per example."""
    eps = sorted(float(e) for e in eps_list)
    dev = next(model.parameters()).device
    thresholds, clean, xs, ys = [], [], [], []
    attacked = 0
    for x, y in _batches(data, batch_size):
        was = model.training
        with torch.no_grad():
            correct = (model.eval()(x.to(dev)).argmax(1) == y.to(dev)).cpu()
        model.train(was)
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
                    attack = create_attack(
                        name, model, seed=seed, **_with_eps(name, options, eps[m])
                    )
                    broken[~broken] = attack(x[todo], y[todo]).success.cpu()
                    attacked += len(todo)
                hi[idx[broken]] = m
                lo[idx[~broken]] = m + 1
        thresholds.append(hi)
        clean.append(correct)
        xs.append(x)
        ys.append(y)
    t = torch.cat(thresholds)
    result = RobustnessResult(
        clean_accuracy=float(torch.cat(clean).float().mean()),
        eps=eps,
        worst={e: float((t > k).float().mean()) for k, e in enumerate(eps)},
        examples=len(t),
        attacked=attacked,
    )
    if checks and eps:
        result.warnings = masking_checks(model, torch.cat(xs), torch.cat(ys), result, seed)
    return result


def _mean(parts: list[torch.Tensor]) -> float:
    return float(torch.cat(parts).float().mean()) if parts else 0.0


def _has_eps(name: str) -> bool:
    import dataclasses

    from nettle.attack.base import ATTACKS

    return "eps" in {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}


def _with_eps(name: str, options: dict[str, Any], eps: float) -> dict[str, Any]:
    import dataclasses

    from nettle.attack.base import ATTACKS

    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}
    if "eps" not in fields:
        return dict(options)
    out = {**options, "eps": eps}
    if "alpha" in fields and "alpha" not in options:
        out["alpha"] = eps / 4  # a step size that scales with the ball
    return out


def _pgd_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, **cfg: Any
) -> float:
    res = create_attack("pgd", model, seed=seed, **cfg)(x, y)
    return 1.0 - float(res.success.float().mean())


def masking_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: RobustnessResult,
    seed: int = 0,
    tol: float = 0.02,
) -> list[str]:
    """Warnings for signs of gradient masking beyond monotonicity (see the module docstring)."""
    warnings: list[str] = []
    was = model.training
    with torch.no_grad():
        dev = next(model.parameters()).device
        keep = (model.eval()(x.to(dev)).argmax(1) == y.to(dev)).cpu()
    model.train(was)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return warnings
    unbounded = _pgd_accuracy(model, x, y, seed, eps=1.0, alpha=0.1, steps=50, random_start=True)
    if unbounded > 0.05:
        warnings.append(
            f"an unbounded PGD (eps 1.0, 50 steps) leaves {unbounded:.1%} of correctly classified "
            "examples correct (expected ~0%): gradients look masked"
        )
    e = result.eps[-1]
    base = _pgd_accuracy(model, x, y, seed, eps=e, alpha=e / 4, steps=10)
    strong = _pgd_accuracy(model, x, y, seed, eps=e, alpha=e / 8, steps=40, restarts=3)
    if strong > base + tol:
        warnings.append(
            f"more PGD steps/restarts raised accuracy at eps {e:g} ({base:.1%} -> {strong:.1%})"
        )
    if "fgsm" in result.accuracy and "pgd" in result.accuracy:
        for eps in result.eps:
            f, p = result.accuracy["fgsm"][eps], result.accuracy["pgd"][eps]
            if f + tol < p:
                warnings.append(f"FGSM beats PGD at eps {eps:g} ({f:.1%} < {p:.1%})")
    for black in ("spsa",):
        if black in result.accuracy and "pgd" in result.accuracy:
            for eps in result.eps:
                b, p = result.accuracy[black][eps], result.accuracy["pgd"][eps]
                if b + tol < p:
                    warnings.append(f"black-box {black} beats white-box PGD at eps {eps:g}")
    return warnings


def format_robustness(result: RobustnessResult) -> str:
    """Plain-text table: attack x epsilon robust accuracy, worst case, warnings."""
    head = f"{'attack':<10}" + "".join(f"{e:>9g}" for e in result.eps)
    lines = [f"clean accuracy {result.clean_accuracy:.2%} on {result.examples} examples", head]
    for name, curve in result.accuracy.items():
        lines.append(f"{name:<10}" + "".join(f"{curve[e]:>9.1%}" for e in result.eps))
    lines.append(f"{'worst':<10}" + "".join(f"{result.worst[e]:>9.1%}" for e in result.eps))
    lines += [f"WARNING: {w}" for w in result.warnings]
    return "\n".join(lines)
