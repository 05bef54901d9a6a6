"""Input normalisation as the model's first module, so inputs (and attacks) stay in [0, 1].

Example:
    >>> norm = Normalize([0.5], [0.25])
    >>> norm(torch.ones(1, 1, 2, 2)).flatten().tolist()
    [2.0, 2.0, 2.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nettle.measure.formulas import OpCount, register_formula

__all__ = ["Normalize", "RepeatChannels", "normalize"]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`(x - mean) / std` over the channels (dim 1) of an `(N, C, ...)` batch.

    Args:
        x: the batch, shape (N, C, ...).
        mean: C per-channel means.
        std: C per-channel standard deviations.
    """
    if x.dim() < 2 or x.shape[1] != mean.numel():
        raise ValueError(
            f"normalize expects {mean.numel()} channels in dim 1, got input of shape "
            f"{tuple(x.shape)}"
        )
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.reshape(shape)) / std.reshape(shape)


class Normalize(nn.Module):
    """`(x - mean) / std` per channel (dim 1); mean and std are buffers, not parameters.

    Args:
        mean: per-channel means.
        std: per-channel standard deviations (positive).
        device: where the buffers live.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        shape = (1, -1, 1, 1)  # broadcasts over (N, C, H, W)
        kw = {"dtype": torch.float32, "device": device}
        self.register_buffer("mean", torch.tensor(list(mean), **kw).reshape(shape))
        self.register_buffer("std", torch.tensor(list(std), **kw).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@register_formula(Normalize)
def _normalize_cost(module: Normalize, inputs: tuple, output: torch.Tensor) -> OpCount:
    return OpCount(elementwise=2 * output.numel())


class RepeatChannels(nn.Module):
    """Tile the channels (dim 1) of a batch `repeats` times: (N, C, ...) -> (N, C*k, ...).

    Put before a foreign network whose first convolution expects `C*k` channels, e.g. a grey
    image (C=1) for an RGB network (3): each of its planes sees the same image.

    Example:
        >>> RepeatChannels(3)(torch.ones(2, 1, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self, repeats: int) -> None:
        super().__init__()
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, self.repeats, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}"
