"""What a training objective returns for one batch: `LossOutput`.

It lives outside `nettle.train` so that objectives written elsewhere (distillation and Bayesian
training in `nettle.compress`) can return one without importing the trainer. The objective
protocol itself is described in `nettle.train.objectives`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["LossOutput"]


@dataclass
class LossOutput:
    """The loss of a batch, the logits accuracy is computed on, and named loss parts.

    `parts` holds detached scalars (tensors or floats, e.g. `{"kd": ..., "at": ...}`); they are
    turned into floats only when a metric line is written, so they cost no device sync per step.
    `correct`, when set, marks (or counts) the correctly predicted examples of the batch, for
    outputs where `logits.argmax(1) == y` is not the accuracy (CTC); None: that argmax test.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor | float] = field(default_factory=dict)
    correct: torch.Tensor | None = None
