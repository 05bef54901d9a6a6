"""Training of the attention recogniser (`nettle.models.attention_ocr`) on text lines.

Labels are the rows of `digit-lines` (`Y[i, 0]` the length `L`, then the digits, then `PAD`).
The decoder's target sequence is the digits followed by the end symbol (`EOS = num_classes`)
and padding; the loss is the cross-entropy of the teacher-forced scores per target symbol
(padding ignored). Training accuracy counts lines whose teacher-forced argmax is right at
every step, end included. `Seq2SeqMetric` decodes greedily (the model's own `forward(x)`) and
gives `loss` (cross-entropy of the greedy path's scores), `acc` (lines read exactly) and `cer`
(character error rate, `nettle.train.ctc.character_error_rate`). Beam search and the language
model are evaluation stages (`nettle.train.beam`). Selected by `train.loss: seq2seq`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer
from nettle.models.attention_ocr import greedy_lines, split_recogniser
from nettle.train.ctc import CTCMetric, levenshtein
from nettle.train.datasets.digit_lines import PAD, split_line_labels

__all__ = ["Seq2SeqMetric", "Seq2SeqObjective", "decoder_targets", "reference_lines"]


def decoder_targets(y: torch.Tensor, eos: int, steps: int | None = None) -> torch.Tensor:
    """(N, steps) digits, then `eos`, then `PAD`, from line label rows (N, 1 + S)."""
    digits, lengths = split_line_labels(y)
    steps = digits.shape[1] + 1 if steps is None else steps
    targets = F.pad(digits, (0, max(steps - digits.shape[1], 0)), value=PAD)[:, :steps].clone()
    at = torch.arange(steps, device=y.device)[None]
    targets[at == lengths[:, None]] = eos
    return targets.masked_fill(at > lengths[:, None], PAD)


def reference_lines(y: torch.Tensor) -> list[list[int]]:
    """The digits of each line label row."""
    digits, lengths = split_line_labels(y)
    return [row[:n] for row, n in zip(digits.tolist(), lengths.tolist())]


def _sequence_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) mean cross-entropy per target symbol of each line."""
    per = F.cross_entropy(scores, targets, ignore_index=PAD, reduction="none")
    return per.sum(1) / (targets != PAD).sum(1).clamp(min=1)


class Seq2SeqObjective:
    """Teacher-forced cross-entropy of the attention recogniser (see the module docstring)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        prepare, net = split_recogniser(model)
        targets = decoder_targets(y, net.eos)
        with timer.phase("forward"):
            scores = net(prepare(x), targets)
            loss = _sequence_loss(scores, targets).mean()
        right = (scores.detach().argmax(1) == targets) | (targets == PAD)
        return LossOutput(loss, scores, correct=right.all(1))

    def eval_metric(self) -> Seq2SeqMetric:
        """A fresh metric for the trainer's evaluation."""
        return Seq2SeqMetric()


class Seq2SeqMetric(CTCMetric):
    """Test metrics of a greedily decoding recogniser: `loss`, `acc`, `cer` (the sums and
    `compute` of `CTCMetric`, so shards add up the same way; only `update` differs).
    """

    def update(self, scores: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of greedy scores (N, V, L) and line label rows (N, 1 + S)."""
        eos = scores.shape[1] - 1
        targets = decoder_targets(y, eos, scores.shape[2])
        refs = reference_lines(y)
        read = greedy_lines(scores, eos)
        s = self.sums
        s["loss"] += float(_sequence_loss(scores, targets).sum())
        s["correct"] += sum(p == r for p, r in zip(read, refs))
        s["edits"] += sum(levenshtein(p, r) for p, r in zip(read, refs))
        s["chars"] += sum(len(r) for r in refs)
        s["seen"] += len(y)
