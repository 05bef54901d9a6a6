"""Train/eval flags of a module tree: `eval_mode`, the one way to evaluate a model and give
every submodule back its own flag (a frozen BatchNorm inside a training model stays frozen)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the block; then restore every module's own train flag
    (the top-level `train()` runs first, so an override of it still sees the change), also on
    errors."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        model.train(modes[0][1])
        for module, training in modes:
            module.training = training
