"""Losses of the logic-inspired models: sigmoid outputs with MSE, and "strictening".

- `sigmoid_mse_loss`: each class an independent proposition: sigmoid of the logits against a
  one-hot (or all-zero, for open-world negatives) target, squared error weighted `pos:neg`
  (9:1 by default, as the research code).
- `strictening_penalty`: the sum over layers of the mean absolute weight plus the mean bias
  (bias *without* absolute value, pushing biases negative so units fire only on strong
  evidence); per-layer means keep the strength independent of depth.
- `logic_regularizer(model, kind)`: the regularisers of the research code ("newlogic", Le
  2019-2020, `train.py`), by name (`REGULARIZERS`). Over the weights `W` (and quadratic `Q`)
  and biases `b` of every conv/linear layer:

  | kind             | weight term                 | bias term                          |
  |------------------|-----------------------------|------------------------------------|
  | `strictening_l1` | sum over layers mean(abs W) | sum over layers mean(b)            |
  | `strictening_l2` | sum over layers mean(W^2)   | sum over layers mean(b * abs b)    |
  | `max_fit_l1`     | mean of abs w over all w    | mean of b over all b               |
  | `max_fit_l2`     | mean of w^2 over all w      | mean of b * abs b over all b       |
  | `max_margin_l1`  | mean of abs w over all w    | none                               |
  | `max_margin_l2`  | mean of w^2 over all w      | none                               |

  The bias terms are signed (no absolute value), so they push biases negative. Strictening is
  the October 2019 form (commits bf7dc2e and 8855970: a mean per layer, summed); max-fit and
  max-margin are the final form (a mean over all parameters of a kind at once, `tmean`),
  run there with one strength for weights and biases (`--l1=0.1 --bias_l1=0.1`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "REGULARIZERS",
    "logic_regularizer",
    "sigmoid_mse_loss",
    "strictening_penalty",
    "to_multi_hot",
]

REGULARIZERS = (
    "strictening_l1",
    "strictening_l2",
    "max_fit_l1",
    "max_fit_l2",
    "max_margin_l1",
    "max_margin_l2",
)
"""The names `logic_regularizer` takes (see the module docstring)."""


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
    logits: torch.Tensor,
    target: torch.Tensor,
    pos_weight: float = 9.0,
    neg_weight: float = 1.0,
    probabilities: bool = False,
) -> torch.Tensor:
    """Mean of the weighted squared errors between `sigmoid(logits)` and a multi-hot target.

    `probabilities=True`: `logits` are already probabilities (a model with a sigmoid output).
    """
    t = to_multi_hot(target, logits.shape[1]).to(logits.dtype)
    w = t * pos_weight + (1 - t) * neg_weight
    p = logits if probabilities else torch.sigmoid(logits)
    return (w * (p - t).pow(2)).mean()


def _weights_and_biases(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights (and quadratic `q`) and biases of the conv/linear layers of `model`."""
    weights, biases = [], []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            weights.append(m.weight)
            q = getattr(m, "q", None)
            if isinstance(q, nn.Parameter):
                weights.append(q)
            if m.bias is not None:
                biases.append(m.bias)
    if not weights:
        raise ValueError("the logic regularisers need a Linear or Conv layer in the model")
    return weights, biases


def _signed_square(b: torch.Tensor) -> torch.Tensor:
    return b * b.abs()


def logic_regularizer(model: nn.Module, kind: str) -> torch.Tensor:
    """The regulariser `kind` (one of `REGULARIZERS`) of `model`'s parameters, a scalar."""
    if kind not in REGULARIZERS:
        raise ValueError(f"unknown regulariser {kind!r}; known: {', '.join(REGULARIZERS)}")
    weights, biases = _weights_and_biases(model)
    l2 = kind.endswith("_l2")
    w_term = (lambda w: w * w) if l2 else torch.abs
    b_term = _signed_square if l2 else (lambda b: b)
    zero = weights[0].new_zeros(())
    if kind.startswith("strictening"):
        total = torch.stack([w_term(w).mean() for w in weights]).sum()
        return total + sum((b_term(b).mean() for b in biases), zero)
    total = torch.cat([w_term(w).flatten() for w in weights]).mean()
    if kind.startswith("max_fit") and biases:
        total = total + torch.cat([b_term(b).flatten() for b in biases]).mean()
    return total


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
