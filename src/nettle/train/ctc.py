"""CTC training and scoring of sequence models (Graves et al. 2006) such as the CRNN.

Conventions (those of `nettle.models.crnn` and the `digit-lines` data set):
- the model returns log-probabilities (N, C, T): class 0 is the blank, class `k + 1` label `k`;
- labels are rows (N, 1 + S): the length `L`, then the `L` labels (0..C-2), then padding
  (`nettle.train.datasets.digit_lines`).

Decoding is greedy best path: the most likely class at every step, repeats collapsed, blanks
dropped. Metrics: `acc` is the fraction of lines decoded exactly, `cer` the character error rate
(the Levenshtein distance between the decoded and the true labels, summed over lines, over the
total number of true labels), `loss` the CTC loss per label (`F.ctc_loss`'s "mean").

Selected by `train.loss: ctc`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.timing import PhaseTimer
from nettle.train.objectives import LossOutput

__all__ = [
    "CTCMetric",
    "CTCObjective",
    "best_path",
    "character_error_rate",
    "ctc_loss",
    "decode",
    "levenshtein",
    "lines_correct",
]

BLANK = 0


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Edit distance (insertions, deletions, substitutions, each costing 1) from `a` to `b`."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def character_error_rate(
    predictions: Sequence[Sequence[Any]], references: Sequence[Sequence[Any]]
) -> float:
    """Summed edit distances over the summed reference lengths (0 for no reference labels)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    chars = sum(len(r) for r in references)
    edits = sum(levenshtein(p, r) for p, r in zip(predictions, references, strict=True))
    return edits / chars if chars else 0.0


def best_path(log_probs: torch.Tensor, blank: int = BLANK) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy CTC decoding of a batch, without leaving the device.

    Args:
        log_probs: (N, C, T) scores (log-probabilities or logits).
        blank: the blank class.

    Returns:
        (classes (N, T): the decoded classes left-aligned, -1 after the end; lengths (N,)).
    """
    path = log_probs.argmax(1)  # (N, T)
    keep = path != blank
    keep[:, 1:] &= path[:, 1:] != path[:, :-1]
    steps = torch.arange(path.shape[1], device=path.device)
    order = torch.where(keep, steps, steps + path.shape[1]).argsort(dim=1, stable=True)
    lengths = keep.sum(1)
    classes = path.gather(1, order)
    return classes.masked_fill(steps >= lengths[:, None], -1), lengths


def decode(log_probs: torch.Tensor, blank: int = BLANK) -> list[list[int]]:
    """Greedy CTC decoding as lists of labels (class - 1 when `blank` is 0, the class otherwise)."""
    classes, lengths = best_path(log_probs, blank)
    shift = 1 if blank == 0 else 0
    return [[c - shift for c in row[:n]] for row, n in zip(classes.tolist(), lengths.tolist())]


def _targets(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes (N, S) (label + 1, 0 past the end) and lengths (N,) of label rows."""
    if y.dim() != 2 or y.shape[1] < 2:
        raise ValueError(f"CTC labels must be (N, 1 + max_length), got shape {tuple(y.shape)}")
    lengths = y[:, 0]
    steps = torch.arange(y.shape[1] - 1, device=y.device)
    return torch.where(steps < lengths[:, None], y[:, 1:] + 1, 0), lengths


def ctc_loss(log_probs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """`F.ctc_loss` of model outputs (N, C, T) against label rows (N, 1 + S), blank 0."""
    targets, lengths = _targets(y)
    t = log_probs.shape[2]
    inputs = torch.full((log_probs.shape[0],), t, dtype=torch.long, device=log_probs.device)
    lp = log_probs.permute(2, 0, 1).log_softmax(-1)  # (T, N, C); idempotent on log-probs
    return F.ctc_loss(lp, targets, inputs, lengths, blank=BLANK, reduction=reduction)


def lines_correct(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) bool: whether the best path of each line equals its labels exactly."""
    classes, lengths = best_path(log_probs)
    targets, target_lengths = _targets(y)
    s = targets.shape[1]
    if classes.shape[1] < s:
        classes = F.pad(classes, (0, s - classes.shape[1]), value=-1)
    steps = torch.arange(s, device=y.device)
    same = (classes[:, :s] == targets) | (steps >= target_lengths[:, None])
    return (lengths == target_lengths) & same.all(1)


class CTCMetric:
    """Test metrics of a CTC model: `loss`, `acc` (whole lines) and `cer`; reset/update/compute.

    Its state is additive (`sums`), so the sums of several shards can be added before `compute`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.sums = {"loss": 0.0, "correct": 0, "edits": 0, "chars": 0, "seen": 0}

    def update(self, log_probs: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of model outputs (N, C, T) and label rows (N, 1 + S)."""
        lengths = y[:, 0]
        loss = ctc_loss(log_probs, y, reduction="none") / lengths.clamp(min=1)
        s = self.sums
        s["loss"] += float(loss.sum())
        s["correct"] += int(lines_correct(log_probs, y).sum())
        refs = [row[1 : 1 + n] for row, n in zip(y.tolist(), lengths.tolist())]
        s["edits"] += sum(levenshtein(p, r) for p, r in zip(decode(log_probs), refs))
        s["chars"] += int(lengths.sum())
        s["seen"] += len(y)

    def compute(self) -> dict[str, float]:
        """{"loss": per label, "acc": exact lines, "cer": edits per true label}."""
        s, n = self.sums, max(self.sums["seen"], 1)
        return {
            "loss": s["loss"] / n,
            "acc": s["correct"] / n,
            "cer": s["edits"] / max(s["chars"], 1),
        }


class CTCObjective:
    """CTC loss of a sequence model; training accuracy counts exactly decoded lines."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("forward"):
            log_probs = model(x)
            loss = ctc_loss(log_probs, y)
            correct = lines_correct(log_probs.detach(), y)
        return LossOutput(loss, log_probs, correct=correct)

    def eval_metric(self) -> CTCMetric:
        """A fresh metric for the trainer's evaluation."""
        return CTCMetric()
