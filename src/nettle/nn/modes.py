"""Train/eval flags of a module tree: `eval_mode`, the one way to evaluate a model and give
every submodule back its own flag (a frozen BatchNorm inside a training model stays frozen);
and `model_device`, where a model's tensors live."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["eval_mode", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


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
