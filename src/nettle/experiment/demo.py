"""The main job: teacher, budgeted students, cost, report, on the offline digits data.

`run_demo` is what `nettle demo` calls:

1. train a teacher (`simple-cnn` on `digits`);
2. for two substitutes (low rank, hashed), find with the budget solver the setting whose student
   has a quarter of the teacher's parameters, and distil each student from the teacher
   (attention transfer, beta 50: see `DEMO_BETA`);
3. count every model (parameters, theoretical and executed multiply-adds);
4. attack every model on the test set (FGSM, PGD, CW at a few epsilons) with the masking checks;
5. write the report: `report.html` (table with robust accuracies, error-vs-cost plots with the
   Pareto front, accuracy-vs-epsilon curves, learning curves, masking warnings) and `report.md`
   (the same as a research-log entry, plus where the time went).

Every stage goes through the library functions a user would call, and every run lives in its
own run dir under `root`, so a second invocation reuses finished runs instead of redoing them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nettle.config import ExperimentConfig, load_config_dict
from nettle.measure import CostReport, count

__all__ = ["DemoResult", "demo_config", "run_demo"]

log = logging.getLogger(__name__)

STUDENT_SUBSTITUTES = ("Generic", "Hashed")
BUDGET_FRACTION = 1 / 4
DEMO_EPS = (0.05, 0.1, 0.2)
DEMO_ATTACKS = {
    "fgsm": {},
    "pgd": {"steps": 10},
    "cw": {"binary_search_steps": 5, "steps": 100, "initial_const": 0.1},
}
# Attention transfer averages squared map differences over positions, so its scale grows as
# maps shrink: beta = 1e3 is tuned for 32x32 CIFAR maps; the 8x8 and 4x4 digits maps need less.
DEMO_BETA = 50.0


@dataclass
class DemoResult:
    """What the demo produced."""

    root: Path
    report: Path
    html: Path
    records: list[dict[str, Any]] = field(default_factory=list)


def demo_config(
    name: str,
    epochs: int | None = None,
    seed: int = 0,
    conv: str | None = None,
    teacher: Path | None = None,
) -> ExperimentConfig:
    """A demo run: `simple-cnn` on `digits` (about 10 s on 2 CPU cores)."""
    tree: dict[str, Any] = {
        "name": name,
        "model": {"name": "simple-cnn", "conv": conv},
        "data": {"name": "digits", "batch_size": 64},
        "train": {
            "epochs": 15 if epochs is None else epochs,
            "seed": seed,
            "device": "cpu",
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "cosine"},
        },
    }
    if teacher is not None:
        tree["distill"] = {"teacher": str(teacher), "beta": DEMO_BETA}
    return load_config_dict(tree, source=f"demo {name}")


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "epoch"]


def _record(
    name: str,
    cfg: ExperimentConfig,
    run_dir: Path,
    summary: dict[str, Any],
    attack_examples: int | None = None,
) -> dict[str, Any]:
    from nettle.attack import evaluate_robustness
    from nettle.experiment.run import load_run_model
    from nettle.train.data import create_dataset

    model = load_run_model(run_dir, cfg)
    cost: CostReport = count(model, (1, 8, 8))
    x, y = create_dataset("digits", "test").tensors
    n = attack_examples or len(y)
    robust = evaluate_robustness(model, (x[:n], y[:n]), DEMO_ATTACKS, DEMO_EPS, seed=cfg.train.seed)
    return {
        "name": name,
        "conv": cfg.model.conv or "Conv",
        "params": cost.params,
        "macs": cost.macs,
        "macs_executed": cost.macs_executed,
        "test_acc": summary.get("best_test_acc"),
        "history": _history(run_dir),
        "run_dir": str(run_dir),
        "phases": summary.get("phases", {}),
        "robustness": robust.accuracy,
        "warnings": robust.warnings,
    }


def _student_setting(substitute: str, budget: float) -> Any:
    from nettle.compress.budget import solve_budget
    from nettle.models import create_model

    def build(conv: str) -> torch.nn.Module:
        with torch.device("meta"):
            return create_model("simple-cnn", in_channels=1, conv=conv)

    return solve_budget(build, substitute, budget)


def run_demo(
    root: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    attack_examples: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the main job into `root` and return where its report is.

    Args:
        root: folder of the demo's runs and report.
        epochs: training epochs of every model (default 15).
        seed: seed of every run.
        attack_examples: attack only the first N test examples (default: all 360).
        progress: optional callback `(stage, info)` for a progress display.
    """
    from nettle.experiment.report import write_report
    from nettle.experiment.run import run_experiment

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda stage, info: None)

    teacher_cfg = demo_config("teacher", epochs, seed)
    teacher_dir = root / "teacher"
    notify("teacher", {"run_dir": str(teacher_dir)})
    records = [
        _record(
            "teacher",
            teacher_cfg,
            teacher_dir,
            run_experiment(teacher_cfg, teacher_dir),
            attack_examples,
        )
    ]

    budget = records[0]["params"] * BUDGET_FRACTION
    notes = []
    for substitute in STUDENT_SUBSTITUTES:
        solved = _student_setting(substitute, budget)
        name = f"student-{substitute.lower()}"
        notes.append(
            f"{name}: {solved.conv} meets the budget of {budget:,.0f} parameters with "
            f"{solved.achieved:,} ({solved.relative_error:+.1%}); distilled from the teacher "
            f"with attention transfer (beta {DEMO_BETA:g})."
        )
        cfg = demo_config(name, epochs, seed, conv=solved.conv, teacher=teacher_dir)
        notify("student", {"name": name, "conv": solved.conv})
        summary = run_experiment(cfg, root / name)
        records.append(_record(name, cfg, root / name, summary, attack_examples))

    notes.append(
        "Robust accuracy on the test digits, L-infinity epsilons in [0, 1] pixel units; "
        "FGSM and PGD-10 are bounded by epsilon; CW-L2 is unbounded and counts at every epsilon "
        "at least the L-infinity size of its perturbation."
    )
    for r in records:
        notes += [f"masking warning for {r['name']}: {w}" for w in r["warnings"]]
    notify("report", {"root": str(root)})
    files = write_report(
        records,
        root,
        title="nettle demo: cheap students of a digits teacher",
        commands=["nettle demo", "nettle count simple-cnn --input 1x8x8"],
        notes=notes,
    )
    _append_timing(files.markdown, records)
    (root / "demo.json").write_text(json.dumps(records, indent=2, default=str))
    return DemoResult(root, files.markdown, files.html, records)


def _append_timing(path: Path, records: list[dict[str, Any]]) -> None:
    lines = ["", "Where the training time went (seconds, share of the step):", ""]
    phases = sorted({p for r in records for p in r["phases"]})
    lines += ["| run | " + " | ".join(phases) + " |", "|---|" + "---:|" * len(phases)]
    for r in records:
        whole = sum(r["phases"].values()) or 1.0
        cells = [
            f"{r['phases'].get(p, 0.0):.2f} ({r['phases'].get(p, 0.0) / whole:.0%})" for p in phases
        ]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    text = path.read_text() + "\n".join(lines) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
