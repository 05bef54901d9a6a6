"""Losses of the logic-inspired models: sigmoid outputs with MSE, and "strictening".

- `sigmoid_mse_loss`: each class an independent proposition: sigmoid of the logits against a
  one-hot (or all-zero, for open-world negatives) target, squared error weighted `pos:neg`
  (9:1 by default, as the research code).
- `strictening_penalty`: the sum over layers of the mean absolute weight plus the mean bias
  (bias *without* absolute value, pushing biases negative so units fire only on strong
  evidence); per-layer means keep the strength independent of depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sigmoid_mse_loss", "strictening_penalty", "to_multi_hot"]


def to_multi_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (N,) -> one-hot floats (N, C); a float (N, C) target is returned as is.

    An index of -1 gives an all-zero row (an open-world negative).
    """
    if target.dtype.is_floating_point:
        return target
    out = torch.zeros(target.shape[0], num_classes, device=target.device)
    keep = target >= 0
    out[keep] = F.one_hot(target[keep], num_classes).float()
    return out


def sigmoid_mse_loss(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 9.0, neg_weight: float = 1.0
) -> torch.Tensor:
    """Mean of the weighted squared errors between `sigmoid(logits)` and a multi-hot target."""
    t = to_multi_hot(target, logits.shape[1]).to(logits.dtype)
    w = t * pos_weight + (1 - t) * neg_weight
    return (w * (torch.sigmoid(logits) - t).pow(2)).mean()


def strictening_penalty(model: nn.Module, bias_weight: float = 1.0) -> torch.Tensor:
    """Sum over conv/linear layers of `mean(|W|) + bias_weight * mean(b)`."""
    terms = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            terms.append(m.weight.abs().mean())
            if m.bias is not None:
                terms.append(bias_weight * m.bias.mean())
    if not terms:
        raise ValueError("strictening needs at least one Linear or Conv layer in the model")
    return torch.stack(terms).sum()
