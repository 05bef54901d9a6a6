"""Activation checkpointing for blocks and for substitutes that rebuild large kernels.

`checkpoint_blocks(model)` makes each residual block (WRN and ResNet blocks, DARTS cells) and
each substitute whose forward rebuilds a dense kernel (hashed, tensor-decomposed, ACDC) recompute
its activations in the backward pass instead of storing them (`torch.utils.checkpoint`,
non-reentrant, random state preserved so dropout and drop-path replay exactly). Outside training
or without gradients the modules run as before. Returns the names of the wrapped modules.

Caveat (of any recompute-based checkpointing): batch-norm layers inside a checkpointed block see
the recomputation as a second forward pass, so their running statistics take two momentum
updates per training step; gradients are unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_blocks", "default_checkpoint_types"]


def default_checkpoint_types() -> tuple[type[nn.Module], ...]:
    """Blocks of the zoo and kernel-rebuilding substitutes."""
    from nettle.models.darts import Cell
    from nettle.models.resnet import BasicBlock as ResBasic
    from nettle.models.resnet import Bottleneck
    from nettle.models.wrn import BasicBlock as WRNBasic
    from nettle.nn.substitutes.acdc import ACDC
    from nettle.nn.substitutes.hashed import HashedConv2d
    from nettle.nn.substitutes.tensor import Decomposed1x1

    return (WRNBasic, ResBasic, Bottleneck, Cell, ACDC, HashedConv2d, Decomposed1x1)


def _checkpointed(module: nn.Module, forward: Callable, *args, **kwargs):
    if module.training and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_blocks(
    model: nn.Module, types: tuple[type[nn.Module], ...] | None = None
) -> list[str]:
    """Checkpoint the outermost modules of `types` (default: `default_checkpoint_types()`)."""
    types = types or default_checkpoint_types()
    wrapped: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(name.startswith(w + ".") for w in wrapped):
            module.forward = functools.partial(_checkpointed, module, module.forward)
            wrapped.append(name)
    return wrapped
