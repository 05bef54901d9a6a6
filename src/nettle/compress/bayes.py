"""Bayesian compression (Louizos, Ullrich & Welling 2017): the training loss and the report.

A run with a `bayes:` section trains a model of `nettle.nn.bayesian` layers (its own, such as
`bayes-lenet`, or any model converted by `bayes.convert`, `nettle.compress.bayes_convert`) with
`BayesObjective`: cross-entropy + beta * KL / (number of training examples), beta rising from 0
to 1 over `bayes.kl_warmup_epochs` (`kl_weight`), the weight variances clipped after every step.
After training, `bayes_report` prunes at `bayes.threshold` and reduces precision
(`nettle.compress.bayes_prune`), measures the test accuracy after pruning and after reduced
precision, and gives "architecture compression factor X, bit-precision factor Y, accuracy after
reduced precision Z" with a per-layer table; the first layer's evolution is drawn into the run
dir (`nettle.compress.bayes_evolution`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nettle.compress.bayes_evolution import EvolutionRecorder, write_evolution
from nettle.compress.bayes_prune import (
    apply_compression,
    compress_bayesian,
    format_compression,
    remove_compression,
)
from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer
from nettle.nn.bayesian import bayesian_kl, clip_variances

__all__ = ["BayesObjective", "bayes_report", "kl_weight"]


def bayes_report(
    model: nn.Module, threshold: float, accuracy: Callable[[nn.Module], float]
) -> dict[str, Any]:
    """Prune, measure; reduce precision, measure; then put the model back as trained.

    Args:
        model: a trained model of `nettle.nn.bayesian` layers.
        threshold: the `log alpha` pruning threshold.
        accuracy: the test accuracy of a model (called twice: pruned at full precision, then
            pruned at reduced precision).

    Returns:
        `BayesCompression.to_dict()` with both accuracies, plus its `text`
        (`format_compression`).
    """
    report, masks, bits = compress_bayesian(model, threshold)
    try:
        apply_compression(model, masks)
        report.accuracy_pruned = accuracy(model)
        apply_compression(model, masks, bits)
        report.accuracy_reduced = accuracy(model)
    finally:
        remove_compression(model)
    return report.to_dict() | {"text": format_compression(report)}


def kl_weight(epoch: int, warmup_epochs: int) -> float:
    """The KL weight of an epoch (0-based): `epoch / warmup_epochs`, at most 1 (1 without
    warm-up). Epoch 0 trains on the data term alone; from epoch `warmup_epochs` on, the full
    ELBO (Sonderby et al. 2016's warm-up)."""
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be at least 0, got {warmup_epochs}")
    return 1.0 if warmup_epochs == 0 else min(1.0, epoch / warmup_epochs)


class BayesObjective:
    """Variational loss: cross-entropy + beta * KL / (number of training examples).

    The KL of the whole model is scaled by the number of *examples* (not minibatches), so the
    per-batch loss is an unbiased estimate of the negative ELBO per example; `beta` is the
    warm-up weight of the epoch (`kl_weight`). After every optimiser step the layers'
    variances are clipped (`clip_var`). A `recorder` (`EvolutionRecorder`) keeps the first
    layer's weights at the start of chosen epochs (checkpointed with the objective). After
    training, `final_report` prunes at `threshold`, reports the compression (`bayes_report`)
    and draws the weights' evolution into the run dir.
    """

    def __init__(
        self,
        num_examples: int,
        threshold: float = -3.0,
        kl_warmup_epochs: int = 0,
        recorder: EvolutionRecorder | None = None,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        self.num_examples, self.threshold = num_examples, threshold
        self.kl_warmup_epochs = kl_warmup_epochs
        self.kl_weight = kl_weight(0, kl_warmup_epochs)
        self.recorder = recorder

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.kl_weight = kl_weight(epoch, self.kl_warmup_epochs)
        if self.recorder is not None:
            self.recorder.record(epoch)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("forward"):
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            kl = bayesian_kl(model) / self.num_examples
        parts = {"ce": ce.detach(), "kl": kl.detach(), "kl_weight": self.kl_weight}
        return LossOutput(ce + self.kl_weight * kl, logits, parts)

    def after_step(self, model: nn.Module) -> None:
        clip_variances(model)

    def extra_state(self) -> dict[str, Any]:
        return {"evolution": self.recorder.state()} if self.recorder is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.recorder is not None and "evolution" in state:
            self.recorder.load_state(state["evolution"])

    def final_report(
        self,
        model: nn.Module,
        accuracy: Callable[[nn.Module], float],
        run_dir: str | Path | None = None,
    ) -> dict[str, Any]:
        """`{"bayes": bayes_report(...)}` of the trained model; with a `run_dir`, the
        evolution pictures (`bayes/evolution.png`, `.gif`) are written and listed."""
        report = bayes_report(model, self.threshold, accuracy)
        if self.recorder is not None and run_dir is not None:
            self.recorder.record_final()
            files = write_evolution(self.recorder.frames, Path(run_dir) / "bayes", self.threshold)
            report["evolution"] = {k: str(v) for k, v in files.items()}
        return {"bayes": report}
