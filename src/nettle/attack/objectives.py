"""What an attack ascends and what counts as its success, for classifiers and other models.

An attack takes `loss_fn(output, y) -> (N,)` (the per-example loss it ascends) and
`success_fn(output, y) -> (N,) bool` (where it succeeded); an `Objective` bundles the two with an
optional per-example error measure that the robustness evaluation reports beside accuracy.

- `classification()`: cross-entropy of logits (N, K) to classes (N,), success = misclassified
  (the defaults of every attack).
- `ctc_lines()`: for CTC line recognisers (`nettle.models.crnn`, labels as rows
  (N, 1 + S): length, then labels; `nettle.train.ctc`): the loss is the CTC loss of the model's
  log-probabilities (N, C, T) against the label row (so the attack lowers the likelihood of
  the true line), success = the greedy-decoded line differs from the label row, and the error
  measure is the edit distance to the true line (character error rate = summed edits over
  summed line lengths). To count a change from the clean *decoding* instead of the label, pass
  `decoded_rows(model(x))` as the labels.

- `seq2seq_lines()`: the same for the attention recogniser (`nettle.models.attention_ocr`).
- `detection_boxes()`: for the single-stage detector (`nettle.models.yolo`): its loss per
  image, success when a scene is no longer detected exactly, and the share of missed objects.

`objective_for(loss)` maps a run's `train.loss` to its objective. A segmentation example
(per-pixel cross-entropy, success when the example's mean IoU drops below a threshold) is in
`examples/attack_segmentation.py`.

Example:
    >>> import torch
    >>> rows = decoded_rows(torch.tensor([[[0.0, 0, 0], [1, 1, 0], [0, 0, 1]]]).log_softmax(1))
    >>> rows.tolist()  # best path 1 1 2 -> labels 0, 1
    [[2, 0, 1, 0]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nettle.train.ctc import best_path, ctc_loss, decode, levenshtein, lines_correct

__all__ = [
    "Objective",
    "classification",
    "cross_entropy",
    "ctc_lines",
    "decoded_rows",
    "detection_boxes",
    "get_objective",
    "margin_loss",
    "misclassified",
    "objective_for",
    "seq2seq_lines",
]

Errors = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: per-example cross-entropy of logits (N, K) to classes (N,)."""
    return F.cross_entropy(output, y, reduction="none")


def misclassified(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default success: (N,) True where the top logit is not the class."""
    return output.argmax(1) != y


def margin_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-example logit margin, negative exactly when the attack succeeds.

    Untargeted: `Z_y - max_{i != y} Z_i`; targeted: `max_{i != t} Z_i - Z_t`. The "other" logit
    excludes the class with -inf, so it stays right when every logit is negative.
    """
    cls = target if target is not None else y
    onehot = F.one_hot(cls, logits.shape[1]).bool()
    real = logits.gather(1, cls[:, None]).squeeze(1)
    other = logits.masked_fill(onehot, float("-inf")).amax(1)
    return other - real if target is not None else real - other


@dataclass(frozen=True)
class Objective:
    """A model's attack objective.

    Attributes:
        name: what it is called in results.
        loss_fn: `(output, y) -> (N,)` loss to ascend.
        success_fn: `(output, y) -> (N,)` bool, True where the attack succeeded.
        errors: optional `(output, y) -> (errors (N,), units (N,))`; the evaluation reports
            `sum(errors) / sum(units)` under attack (e.g. edits per character).
        error_name: the name of that rate (e.g. "cer").
    """

    name: str
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    success_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    errors: Errors | None = None
    error_name: str = ""


def classification() -> Objective:
    """Cross-entropy and misclassification: the default of every attack."""
    return Objective("classification", cross_entropy, misclassified)


def ctc_loss_per_line(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) CTC loss of outputs (N, C, T) against label rows (N, 1 + S)."""
    return ctc_loss(log_probs, y, reduction="none")


def line_changed(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) True where the greedy decoding differs from the label row."""
    return ~lines_correct(log_probs, y)


def line_edits(log_probs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(edit distance of each decoded line to its labels, label count of each line)."""
    lengths = y[:, 0]
    refs = [row[1 : 1 + n] for row, n in zip(y.tolist(), lengths.tolist(), strict=True)]
    edits = [levenshtein(p, r) for p, r in zip(decode(log_probs), refs, strict=True)]
    return torch.tensor(edits), lengths.cpu()


def ctc_lines() -> Objective:
    """CTC loss, success when the decoded line changes, character error rate."""
    return Objective("ctc-lines", ctc_loss_per_line, line_changed, line_edits, "cer")


def seq2seq_lines() -> Objective:
    """For an attention recogniser (`train.loss: seq2seq`; outputs are the greedy path's scores
    (N, V, L)): the cross-entropy of those scores against the true line and its end, success
    when the greedily read line changes, character error rate."""
    from nettle.models.attention_ocr import greedy_lines
    from nettle.train.seq2seq import decoder_targets, reference_lines

    def loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets = decoder_targets(y, scores.shape[1] - 1, scores.shape[2])
        per = F.cross_entropy(scores, targets, ignore_index=-1, reduction="none")
        return per.sum(1) / (targets >= 0).sum(1).clamp(min=1)

    def read(scores: torch.Tensor) -> list[list[int]]:
        return greedy_lines(scores, scores.shape[1] - 1)

    def changed(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        flags = [p != r for p, r in zip(read(scores), reference_lines(y), strict=True)]
        return torch.tensor(flags, device=scores.device)

    def edits(scores: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        refs = reference_lines(y)
        counts = [levenshtein(p, r) for p, r in zip(read(scores), refs, strict=True)]
        return torch.tensor(counts), torch.tensor([len(r) for r in refs])

    return Objective("seq2seq-lines", loss, changed, edits, "cer")


def detection_boxes() -> Objective:
    """For the single-stage detector (`train.loss: detection`, `nettle.train.detection`): its
    training loss per image, success when a scene is no longer detected exactly (every object
    once, right class, IoU >= 0.5, nothing else at score >= 0.5), and the share of objects
    missed under attack ("miss")."""
    from nettle.train.detection import detect, detection_loss, missed_objects, scenes_correct

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return detection_loss(out, y, reduction="none")[0]

    def broken(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ~scenes_correct(detect(out.detach()), y.cpu()).to(out.device)

    def missed(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return missed_objects(detect(out.detach()), y.cpu())

    return Objective("detection", loss, broken, missed, "miss")


def decoded_rows(log_probs: torch.Tensor) -> torch.Tensor:
    """Greedy decodings of outputs (N, C, T) as label rows (N, 1 + T) (length, labels, 0s)."""
    classes, lengths = best_path(log_probs)
    labels = (classes - 1).clamp(min=0)  # class k + 1 is label k; -1 past the end -> 0
    return torch.cat([lengths[:, None], labels], 1)


def get_objective(name: str) -> Objective:
    """The objective called `name`: classification, ctc-lines, seq2seq-lines or detection."""
    known = {
        "classification": classification,
        "ctc-lines": ctc_lines,
        "seq2seq-lines": seq2seq_lines,
        "detection": detection_boxes,
    }
    if name not in known:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(known)}")
    return known[name]()


def objective_for(loss: str) -> Objective:
    """The attack objective of a run trained with `train.loss = loss`."""
    by_loss = {"ctc": ctc_lines, "seq2seq": seq2seq_lines, "detection": detection_boxes}
    return by_loss.get(loss, classification)()
