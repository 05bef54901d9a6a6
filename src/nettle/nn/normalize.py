"""Input normalisation as the model's first module, so inputs (and attacks) stay in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nettle.measure.formulas import OpCount, register_formula

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """`(x - mean) / std` per channel (dim 1); mean and std are buffers, not parameters."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects {self.mean.shape[1]} channels, got input of shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@register_formula(Normalize)
def _normalize_cost(module: Normalize, inputs: tuple, output: torch.Tensor) -> OpCount:
    return OpCount(elementwise=2 * output.numel())
