"""Example inputs for measuring a model: shapes made into tensors on the model's device.

Shared by `count` (cost) and `measure_latency` (time): an input is one shape without the
batch dimension, a list of shapes (models with several inputs), or tensors given as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Shapes", "forward_kwargs_on", "make_inputs", "placement"]

Shapes = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | Sequence[torch.Tensor]


def make_inputs(
    input_shape: Shapes, batch_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """Example inputs: given tensors moved to `device`, or uniform [0, 1) ones of each shape."""
    if isinstance(input_shape, torch.Tensor):
        return (input_shape.to(device),)
    items = list(input_shape)
    if items and isinstance(items[0], torch.Tensor):
        return tuple(t.to(device) for t in items)
    shapes = items if items and isinstance(items[0], (tuple, list, torch.Size)) else [items]
    g = torch.Generator().manual_seed(0)
    return tuple(
        torch.rand((batch_size, *map(int, s)), generator=g, dtype=dtype).to(device) for s in shapes
    )


def forward_kwargs_on(device: torch.device, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of the forward, their tensors moved to `device`."""
    return {
        k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in (kwargs or {}).items()
    }


def placement(
    model: nn.Module, device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of `model` (or `device`, checked against it)."""
    tensors = list(model.parameters()) + list(model.buffers())
    devices = {t.device for t in tensors}
    dev = torch.device(device) if device is not None else next(iter(devices), torch.device("cpu"))
    if device is not None and devices and dev not in devices:
        raise ValueError(
            f"count: the model is on {', '.join(sorted(map(str, devices)))}, not on {dev}; "
            "move it first (model.to(device))"
        )
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    return dev, dtype or (floats[0] if floats else torch.get_default_dtype())
