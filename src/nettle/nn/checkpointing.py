"""Activation checkpointing for blocks and for substitutes that rebuild large kernels.

`checkpoint_blocks(model)` makes each block the model declares (its modules'
`checkpoint_block_types` class attribute: WRN and ResNet blocks, DARTS cells) and each
substitute whose forward rebuilds a dense kernel (hashed, tensor-decomposed, ACDC) recompute
its activations in the backward pass instead of storing them (`torch.utils.checkpoint`,
non-reentrant, random state preserved so dropout and drop-path replay exactly). Outside training
or without gradients the modules run as before. Returns the names of the wrapped modules.

Caveat (of any recompute-based checkpointing): batch-norm layers inside a checkpointed block see
the recomputation as a second forward pass, so their running statistics take two momentum
updates per training step; gradients are unchanged.

Example:
    >>> class Block(nn.Sequential): ...
    >>> class Net(nn.Sequential):
    ...     checkpoint_block_types = (Block,)
    >>> checkpoint_blocks(Net(Block(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 1)))
    ['0']
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nettle.nn.substitutes.acdc import ACDC
from nettle.nn.substitutes.hashed import HashedConv2d
from nettle.nn.substitutes.tensor import Decomposed1x1

__all__ = ["KERNEL_REBUILDING", "checkpoint_blocks", "default_checkpoint_types"]

KERNEL_REBUILDING: tuple[type[nn.Module], ...] = (ACDC, HashedConv2d, Decomposed1x1)
"""Substitutes whose forward rebuilds a dense kernel (worth recomputing, not storing)."""


def default_checkpoint_types(model: nn.Module | None = None) -> tuple[type[nn.Module], ...]:
    """The blocks the modules of `model` declare, then the kernel-rebuilding substitutes.

    A model declares its blocks with a class attribute `checkpoint_block_types`; every module
    of `model` is asked, so a zoo model inside a wrapper (`Normalize` first) is found.
    """
    declared: list[type[nn.Module]] = []
    for module in model.modules() if model is not None else ():
        declared += [t for t in getattr(module, "checkpoint_block_types", ()) if t not in declared]
    return (*declared, *KERNEL_REBUILDING)


def _checkpointed(module: nn.Module, forward: Callable, *args, **kwargs):
    if module.training and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_blocks(
    model: nn.Module, types: tuple[type[nn.Module], ...] | None = None
) -> list[str]:
    """Checkpoint the outermost modules of `types` (default: `default_checkpoint_types(model)`)."""
    types = types or default_checkpoint_types(model)
    wrapped: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(name.startswith(w + ".") for w in wrapped):
            module.forward = functools.partial(_checkpointed, module, module.forward)
            wrapped.append(name)
    return wrapped
