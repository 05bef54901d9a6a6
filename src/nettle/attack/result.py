"""The result of a robustness evaluation and its plain-text table (`format_robustness`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

__all__ = ["RobustnessResult", "format_robustness"]


def _keyed(curves: dict[str, dict[float, Any]]) -> dict[str, dict[str, Any]]:
    return {a: {str(e): v for e, v in c.items()} for a, c in curves.items()}


@dataclass
class RobustnessResult:
    """Robust accuracy per attack and epsilon, with its spread and cost, and masking warnings.

    Attributes:
        clean_accuracy: fraction of examples the model gets right (the objective's success on
            the clean input is False), in [0, 1].
        eps: the epsilons, increasing.
        accuracy: `accuracy[attack][eps]`; a transfer attack is its own row,
            "<attack> (transfer from <surrogate>)".
        worst: `worst[eps]`, an example broken by any attack counts as broken.
        warnings: signs of gradient masking, each with its numbers.
        examples: examples evaluated.
        attacked: attack calls x examples actually attacked.
        spread: `spread[attack][eps]` standard deviation of the robust accuracy over the
            batches (None with one batch).
        cost: `cost[attack][eps]` = {"seconds", "forwards", "backwards"}: wall time and the
            examples passed forward and backward (through the surrogate and the target for a
            transfer row). An attack without an epsilon (CW) runs once, counted at the first.
        error_name, clean_error, errors: an objective's error rate (e.g. "cer"): on clean
            inputs and `errors[attack][eps]` under attack (broken examples at their adversarial
            input, the others at their clean one); empty for classifiers.
        confidence: MaxConfidence's `confidence[attack][eps][threshold]`, the robust accuracy
            of a model that rejects predictions below that probability: an example counts as
            broken when it is misclassified with at least that confidence.
        randomised: two forward passes of the same input differed (EOT needed).
        objective: the objective's name ("classification", "ctc-lines", ...).
    """

    clean_accuracy: float
    eps: list[float]
    accuracy: dict[str, dict[float, float]] = field(default_factory=dict)
    worst: dict[float, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    examples: int = 0
    attacked: int = 0
    spread: dict[str, dict[float, float | None]] = field(default_factory=dict)
    cost: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)
    error_name: str = ""
    clean_error: float | None = None
    errors: dict[str, dict[float, float]] = field(default_factory=dict)
    confidence: dict[str, dict[float, dict[float, float]]] = field(default_factory=dict)
    randomised: bool = False
    objective: str = "classification"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (epsilons and thresholds as strings)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "eps": self.eps,
            "accuracy": _keyed(self.accuracy),
            "worst": {str(e): v for e, v in self.worst.items()},
            "warnings": self.warnings,
            "examples": self.examples,
            "attacked": self.attacked,
            "spread": _keyed(self.spread),
            "cost": _keyed(self.cost),
            "error_name": self.error_name,
            "clean_error": self.clean_error,
            "errors": _keyed(self.errors),
            "confidence": {
                a: {str(e): {str(t): v for t, v in c.items()} for e, c in curves.items()}
                for a, curves in self.confidence.items()
            },
            "randomised": self.randomised,
            "objective": self.objective,
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


def _cell(acc: float, sd: float | None) -> str:
    return f"{acc:.1%}" + (f" ±{sd:.1%}" if sd is not None else "")


def format_robustness(result: RobustnessResult) -> str:
    """Plain-text tables: robust accuracy (± spread over batches) per attack and epsilon, the
    worst case, the error rate, the cost, MaxConfidence's threshold curves and the warnings."""
    width = max([10, *(len(n) + 1 for n in result.accuracy)])
    col = 16
    head = f"{'attack':<{width}}" + "".join(f"{e:>{col}g}" for e in result.eps)
    lines = [f"clean accuracy {result.clean_accuracy:.2%} on {result.examples} examples", head]
    for name, curve in result.accuracy.items():
        sd = result.spread.get(name, {})
        cells = "".join(f"{_cell(curve[e], sd.get(e)):>{col}}" for e in result.eps)
        lines.append(f"{name:<{width}}" + cells)
    lines.append(
        f"{'worst':<{width}}" + "".join(f"{result.worst[e]:>{col}.1%}" for e in result.eps)
    )
    if result.error_name and result.errors:
        lines.append(f"{result.error_name} (clean {result.clean_error:.2%})")
        for name, curve in result.errors.items():
            lines.append(f"{name:<{width}}" + "".join(f"{curve[e]:>{col}.2%}" for e in result.eps))
    if result.cost:
        lines.append("cost: seconds / forward / backward passes (examples)")
        for name, curve in result.cost.items():
            cells = "".join(
                f"{c['seconds']:>{col - 12}.2f}s {c['forwards']:>5}/{c['backwards']:<5}"
                for c in (curve[e] for e in result.eps)
            )
            lines.append(f"{name:<{width}}" + cells)
    for name, curves in result.confidence.items():
        for e, curve in curves.items():
            points = ", ".join(f"{t:g}: {v:.1%}" for t, v in curve.items())
            lines.append(f"{name} eps {e:g}, accuracy vs confidence threshold: {points}")
    lines += [f"WARNING: {w}" for w in result.warnings]
    return "\n".join(lines)
