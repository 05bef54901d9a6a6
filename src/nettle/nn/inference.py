"""Inference forms of a model: the same function, cheaper to evaluate.

`inference_copy(model, example)` returns an eval-mode copy of `model` that attacks and other
repeated evaluations run faster, or the model itself where no faithful copy can be made:

- every BatchNorm that directly follows a convolution is folded into that convolution's weight
  and bias (`torch.fx`'s `fuse`, the standard conv-BN folding: `w' = w * gamma / sqrt(var +
  eps)`, `b' = (b - mean) * gamma / sqrt(var + eps) + beta`). Only the modules that hold a
  BatchNorm are traced; every other module (the input normalisation, substitutes, activations)
  stays one opaque call, so their Python checks and control flow never meet the tracer;
- 4-d weights are stored channels-last, so the convolutions (and the pooling between them)
  run in the NHWC layout, whatever layout the inputs come in;
- no parameter requires a gradient (gradients reach only the input).

On the digits CNN a gradient with respect to the input costs about half as much. The copy is
checked against the model on `example` (outputs within `tol` of each other, relative to their
scale); where it disagrees (e.g. forward hooks that tracing does not see), the model itself is
returned. Where the model cannot be traced, the copy is only channels-last; a model with
nothing to fold whose convolutions hold less than half its weights (a vision transformer's
patch embedding) is not copied. The model is never changed.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import fx, nn

from nettle.nn.modes import eval_mode

__all__ = ["inference_copy"]

log = logging.getLogger(__name__)


class _BatchNormTracer(fx.Tracer):
    """Traces into a module only when a BatchNorm lies inside it."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return not _holds_batchnorm(m) or super().is_leaf_module(m, qualname)


def _holds_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _folded(copied: nn.Module) -> nn.Module:
    """`copied` with its conv-BatchNorm pairs folded (in place), or as it is where it cannot
    be traced."""
    from torch.fx.experimental.optimization import fuse

    try:
        traced = fx.GraphModule(copied, _BatchNormTracer().trace(copied))
        return fuse(traced, inplace=True, no_trace=True)
    except Exception as exc:  # untraceable models keep their BatchNorms
        log.debug("BatchNorm folding skipped: %s", exc)
        return copied


@torch.no_grad()
def inference_copy(model: nn.Module, example: torch.Tensor, tol: float = 1e-4) -> nn.Module:
    """An eval-mode copy of `model`, BatchNorm folded and channels-last, or `model` itself.

    Args:
        model: any module (its own modes and parameters are left as they are).
        example: an input batch on the model's device, to check the copy against the model.
        tol: largest allowed difference of outputs, relative to the largest output magnitude.
    """
    has_bn = _holds_batchnorm(model)
    sizes = [(p.numel(), p.dim() == 4) for p in model.parameters()]
    has_4d = any(four for _, four in sizes)
    conv_heavy = 2 * sum(n for n, four in sizes if four) >= sum(n for n, _ in sizes)
    if not (has_bn or conv_heavy):
        return model  # nothing worth a second copy of the weights
    try:
        copied = copy.deepcopy(model).eval()
    except Exception as exc:  # e.g. a module holding a lock or an open file
        log.debug("inference copy skipped: the model cannot be copied: %s", exc)
        return model
    fast = _folded(copied) if has_bn else copied
    if has_4d:
        fast = fast.to(memory_format=torch.channels_last)
    with eval_mode(model):
        want, got = model(example), fast(example)
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)):
        return model
    scale = float(want.abs().max()) or 1.0
    if want.shape != got.shape or float((want - got).abs().max()) > tol * scale:
        log.debug("inference copy skipped: it disagrees with the model")
        return model
    return fast.requires_grad_(False)
