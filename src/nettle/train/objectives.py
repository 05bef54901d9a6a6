"""Training objectives: what the loss of one batch is.

An objective is called as `objective(model, x, y, timer) -> LossOutput`. It runs the forward
pass itself, timing it with `timer.phase("forward")` (an adversarial objective adds an
`"attack"` phase before it; a distillation objective runs its teacher there too), and returns
the loss to minimise, the logits on which training accuracy is measured, and named parts of the
loss for the metrics. Objectives may also define `on_epoch_start(epoch, epochs)` (called at the
start of every epoch and again when a run resumes inside one: set state from the arguments, do
not step it) and `after_step(model)` hooks (annealing, variance clipping), `extra_state()` /
`load_extra_state(state)` for anything a checkpoint must hold, and `replays` (how many times
the trainer steps on each batch, e.g. "free" adversarial training). An objective whose outputs
are not class scores (CTC) also sets `LossOutput.correct` and provides `eval_metric()`, a fresh
`EvalMetric` for the trainer's evaluation (default `ClassificationMetric`). After training, a
run calls `final_report(model, accuracy, run_dir)` when the objective has one (`accuracy(model)`
is the test accuracy; `run_dir` is where it may write pictures, None on the ranks that write
nothing) and adds the dict it returns to the run's summary (Bayesian compression).

A run picks its objective by config section (`nettle.train.objective_registry`); `LossOutput`
lives in `nettle.loss_output` so that objectives outside this package need not import it.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer

__all__ = [
    "ClassificationMetric",
    "CrossEntropy",
    "EvalMetric",
    "LossOutput",
    "Objective",
    "aux_logit_owners",
    "auxiliary_logits",
]


class Objective(Protocol):
    """The loss of one batch (see the module docstring)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput: ...


class EvalMetric(Protocol):
    """Test metrics accumulated over batches: `reset()`, `update(logits, y)`, `compute()`.

    `compute()` returns at least "loss" and "acc" (the trainer records them as `test_loss`,
    `test_acc`, and any other key as `test_<key>`).
    """

    def reset(self) -> None: ...

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


class ClassificationMetric:
    """Mean cross-entropy, argmax accuracy and, for outputs of more than `k` classes, top-`k`
    accuracy (`top5` by default) over the batches seen.

    Its state is additive (`sums`), so the sums of several shards can be added before
    `compute`; `topk_seen` counts the examples scored over more than `k` classes, so a shard
    that saw no batch still agrees with the others on whether `top5` is reported.

    Args:
        k: the rank within which a prediction counts for `top<k>`.
    """

    def __init__(self, k: int = 5) -> None:
        self.k = k
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.sums: dict[str, float] = {
            "loss": 0.0,
            "correct": 0,
            "seen": 0,
            "topk": 0,
            "topk_seen": 0,
        }

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of logits (N, classes) and labels (N,)."""
        self.sums["loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
        self.sums["correct"] += int((logits.argmax(1) == y).sum())
        self.sums["seen"] += len(y)
        if logits.shape[1] > self.k:
            top = logits.topk(self.k, dim=1).indices
            self.sums["topk"] += int((top == y[:, None]).any(1).sum())
            self.sums["topk_seen"] += len(y)

    def compute(self) -> dict[str, float]:
        """{"loss": mean cross-entropy, "acc": accuracy}, and "top<k>": the share of examples
        whose class is among the `k` highest logits, when there are more than `k` classes."""
        n = max(self.sums["seen"], 1)
        out = {"loss": self.sums["loss"] / n, "acc": self.sums["correct"] / n}
        if self.sums["topk_seen"]:
            out[f"top{self.k}"] = self.sums["topk"] / self.sums["topk_seen"]
        return out


def auxiliary_logits(
    model: nn.Module, owners: list[nn.Module] | None = None
) -> torch.Tensor | None:
    """Logits of an auxiliary head from the last forward pass (e.g. DARTS), if any.

    Args:
        model: the network.
        owners: the modules that may hold `aux_logits` (`aux_logit_owners(model)`), to skip
            walking the whole model on every step.
    """
    for m in model.modules() if owners is None else owners:
        aux = getattr(m, "aux_logits", None)
        if isinstance(aux, torch.Tensor):
            return aux
    return None


def aux_logit_owners(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` with an `aux_logits` attribute (DARTS sets it in `__init__`)."""
    return [m for m in model.modules() if hasattr(m, "aux_logits")]


class CrossEntropy:
    """Cross-entropy on the model's logits (with optional label smoothing), plus
    `aux_weight` times the cross-entropy of an auxiliary head when the model has one (DARTS:
    0.4, as Liu et al. 2019)."""

    def __init__(self, label_smoothing: float = 0.0, aux_weight: float = 0.4) -> None:
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight
        self._owners: tuple[nn.Module | None, list[nn.Module]] = (None, [])

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("forward"):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            parts = {}
            aux = None
            if model.training and self.aux_weight:
                if self._owners[0] is not model:
                    self._owners = (model, aux_logit_owners(model))
                aux = auxiliary_logits(model, self._owners[1])
            if aux is not None:
                aux_loss = F.cross_entropy(aux, y, label_smoothing=self.label_smoothing)
                loss = loss + self.aux_weight * aux_loss
                parts["aux"] = aux_loss.detach()
        return LossOutput(loss, logits, parts)
