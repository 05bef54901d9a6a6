"""The main job: train a teacher on the offline digits data, count it, write a report.

`run_demo` is what `nettle demo` calls. Every stage goes through the same library functions a
user would call (`run_experiment`, `count`), and every run lives in its own run dir under
`root`, so a second invocation resumes or reuses finished runs instead of redoing them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nettle.config import ExperimentConfig, load_config_dict
from nettle.measure import CostReport, count

__all__ = ["DemoResult", "demo_teacher_config", "format_demo_report", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What the demo produced."""

    root: Path
    report: Path
    teacher_dir: Path
    teacher: dict[str, Any]
    cost: CostReport
    extras: dict[str, Any] = field(default_factory=dict)


def demo_teacher_config(epochs: int | None = None, seed: int = 0) -> ExperimentConfig:
    """The teacher of the demo: `simple-cnn` on `digits` (about 20 s on 2 CPU cores)."""
    tree = {
        "name": "teacher",
        "model": {"name": "simple-cnn"},
        "data": {"name": "digits", "batch_size": 64},
        "train": {
            "epochs": 15 if epochs is None else epochs,
            "seed": seed,
            "device": "cpu",
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "cosine"},
        },
    }
    return load_config_dict(tree, source="demo teacher")


def _load_trained_model(run_dir: Path, cfg: ExperimentConfig) -> torch.nn.Module:
    from nettle.experiment.run import load_run_model

    return load_run_model(run_dir, cfg)


def run_demo(
    root: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the main job into `root` and return where its report is.

    Args:
        root: folder of the demo's runs and report.
        epochs: training epochs of the teacher (default 15).
        seed: seed of every run.
        progress: optional callback `(stage, info)` for a progress display.
    """
    from nettle.experiment.run import run_experiment

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda stage, info: None)

    cfg = demo_teacher_config(epochs=epochs, seed=seed)
    teacher_dir = root / cfg.name
    notify("teacher", {"run_dir": str(teacher_dir)})
    summary = run_experiment(cfg, run_dir=teacher_dir, progress=progress)

    notify("count", {"model": cfg.model.name})
    model = _load_trained_model(teacher_dir, cfg)
    x, _ = _example_input(cfg)
    cost = count(model, tuple(x.shape))

    report = root / "report.md"
    text = format_demo_report(cfg, summary, cost, teacher_dir)
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(report)
    (root / "demo.json").write_text(
        json.dumps({"teacher": summary, "cost": cost.to_dict()}, indent=2, default=str)
    )
    notify("report", {"path": str(report)})
    return DemoResult(root, report, teacher_dir, summary, cost)


def _example_input(cfg: ExperimentConfig) -> tuple[torch.Tensor, int]:
    from nettle.train.data import create_dataset

    ds = create_dataset(
        cfg.data.name, split="test", root=cfg.data.root, image_size=cfg.data.image_size
    )
    x, y = ds[0]
    return x, int(y)


def _metric(summary: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        node: Any = summary
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def format_demo_report(
    cfg: ExperimentConfig, summary: dict[str, Any], cost: CostReport, teacher_dir: Path
) -> str:
    """The demo's Markdown report."""
    acc = _metric(summary, "best_test_acc", "final.test_acc", "test_acc")
    lines = [
        f"# nettle demo: {_dt.date.today().isoformat()}",
        "",
        f"Teacher `{cfg.model.name}` trained on `{cfg.data.name}` for {cfg.train.epochs} epochs "
        f"(seed {cfg.train.seed}); run dir `{teacher_dir}`.",
        "",
        "## Models",
        "",
        "| model | params | MACs (default) | MACs executed | test accuracy |",
        "|---|---:|---:|---:|---:|",
        f"| teacher ({cfg.model.name}) | {cost.params:,} | {cost.macs:,} | "
        f"{cost.macs_executed:,} | {_pct(acc)} |",
        "",
        "MACs are multiply-adds per example (one fused multiply-add = 1 MAC) of conv, linear and "
        "matmul ops, by the `default` counting convention.",
        "",
    ]
    phases = _metric(summary, "phases", "timing.phases")
    if isinstance(phases, dict) and phases:
        whole = sum(float(v) for v in phases.values()) or 1.0
        lines += [
            "## Where the training time went",
            "",
            "| phase | seconds | share |",
            "|---|---:|---:|",
        ]
        for name, secs in phases.items():
            lines.append(f"| {name} | {float(secs):.2f} | {float(secs) / whole:.1%} |")
        lines.append("")
    lines += [
        "## Cost by module (teacher)",
        "",
        "| module | type | params | MACs |",
        "|---|---|---:|---:|",
    ]
    for row in cost.modules:
        r = row if isinstance(row, dict) else row.__dict__
        if r.get("macs", 0) or r.get("params", 0):
            lines.append(f"| `{r['name']}` | {r['type']} | {r['params']:,} | {r['macs']:,} |")
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "nettle demo",
        f"nettle count {cfg.model.name} --input {'x'.join(str(s) for s in cost.input_shape)}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"
