"""Ensemble inference over several checkpoints (e.g. the snapshots at LR minima).

`ensemble_predict` averages the softmax probabilities of the models; `load_snapshots` rebuilds a
run's model once per snapshot file (`checkpoints/snapshot-step*.pt`, loaded weights-only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from nettle.nn.modes import eval_mode

__all__ = ["ensemble_accuracy", "ensemble_predict", "load_snapshots"]


@torch.no_grad()
def ensemble_predict(
    models: Sequence[nn.Module], x: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Mean class probabilities (N, classes) of `models` on `x` (each in eval mode, restored)."""
    if not models:
        raise ValueError("an ensemble needs at least one model")
    total = None
    for model in models:
        dev = next(model.parameters()).device
        with eval_mode(model):
            probs = torch.cat(
                [
                    model(x[i : i + batch_size].to(dev)).softmax(1).cpu()
                    for i in range(0, len(x), batch_size)
                ]
            )
        total = probs if total is None else total + probs
    return total / len(models)


def ensemble_accuracy(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of the averaged prediction."""
    return float((ensemble_predict(models, x).argmax(1) == y.cpu()).float().mean())


def load_snapshots(run_dir: str | Path) -> list[nn.Module]:
    """The models of every snapshot checkpoint of a run, oldest first."""
    from nettle.models.build import load_teacher

    paths = sorted(
        Path(run_dir, "checkpoints").glob("snapshot-step*.pt"),
        key=lambda p: int(p.stem.removeprefix("snapshot-step")),
    )
    if not paths:
        raise FileNotFoundError(
            f"{run_dir}: no snapshot checkpoints (train with train.snapshots: true)"
        )
    return [load_teacher(p) for p in paths]
