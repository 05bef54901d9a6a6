"""Inference forms of a model: the same function, cheaper to evaluate.

`fold_batchnorm(model, example)` returns a copy of `model` in which every BatchNorm that directly
follows a convolution is folded into that convolution's weight and bias (`torch.fx`'s `fuse`,
the standard conv-BN folding: `w' = w * gamma / sqrt(var + eps)`, `b' = (b - mean) * gamma /
sqrt(var + eps) + beta`). Only the modules that hold a BatchNorm are traced; every other module
(the input normalisation, substitutes, activations) stays one opaque call, so their Python
checks and control flow never meet the tracer. It is the model's eval-mode function up to float rounding, and an
attack's forward and backward passes through it skip the normalisation: on the digits CNN a
gradient with respect to the input costs a third less. The copy is checked against the model
on `example` (outputs within `tol` of each other, relative to their scale); where the model
cannot be traced, has nothing to fold, or the copy disagrees (e.g. forward hooks that tracing
does not see), the model itself is returned. The model is never changed.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import fx, nn

from nettle.nn.modes import eval_mode

__all__ = ["fold_batchnorm"]

log = logging.getLogger(__name__)


class _BatchNormTracer(fx.Tracer):
    """Traces into a module only when a BatchNorm lies inside it."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        holds_bn = any(isinstance(s, nn.modules.batchnorm._BatchNorm) for s in m.modules())
        return not holds_bn or super().is_leaf_module(m, qualname)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor, tol: float = 1e-4) -> nn.Module:
    """An eval-mode copy of `model` with conv-BatchNorm pairs folded and no parameter that
    requires a gradient, or `model` itself.

    Args:
        model: any module (its own modes and parameters are left as they are).
        example: an input batch on the model's device, to check the copy against the model.
        tol: largest allowed difference of outputs, relative to the largest output magnitude.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        copied = copy.deepcopy(model).eval()
        traced = fx.GraphModule(copied, _BatchNormTracer().trace(copied))
        folded = fuse(traced, inplace=True, no_trace=True)
    except Exception as exc:  # untraceable models are evaluated as they are
        log.debug("BatchNorm folding skipped: %s", exc)
        return model
    with eval_mode(model):
        want, got = model(example), folded(example)
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)):
        return model
    scale = float(want.abs().max()) or 1.0
    if want.shape != got.shape or float((want - got).abs().max()) > tol * scale:
        log.debug("BatchNorm folding skipped: the folded copy disagrees with the model")
        return model
    return folded.requires_grad_(False)  # a private copy: gradients reach only the input
