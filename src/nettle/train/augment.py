"""Training-time augmentations on whole batches, on the device, with an explicit generator.

Every example draws its own parameters; nothing loops over examples in Python. The generator
must live on the batch's device; its state goes into the trainer's checkpoint, which makes a
resumed run draw the same augmentations as an uninterrupted one. Inputs are images in [0, 1]
(N, C, H, W) and outputs stay in [0, 1].

Order in `build_augment`: random crop, flip, rotation, Cutout, random erasing, Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nettle.config import AugmentConfig

__all__ = [
    "BatchAugment",
    "build_augment",
    "cutout",
    "gaussian_noise",
    "random_crop",
    "random_erasing",
    "random_flip",
    "random_rotation",
]


def _uniform(n: int, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g, device=x.device)


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per example."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5
) -> torch.Tensor:
    """Flip each example horizontally with probability `p`."""
    mask = (_uniform(x.shape[0], x, generator) < p)[:, None, None, None]
    return torch.where(mask, x.flip(-1), x)


def random_rotation(
    x: torch.Tensor, degrees: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each example by an angle uniform in [-degrees, degrees] (bilinear, zero fill)."""
    if degrees <= 0:
        return x
    n = x.shape[0]
    angle = (2 * _uniform(n, x, generator) - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _box_mask(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, hh: torch.Tensor, ww: torch.Tensor
) -> torch.Tensor:
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (
        (ys >= top[:, None, None])
        & (ys < (top + hh)[:, None, None])
        & (xs >= left[:, None, None])
        & (xs < (left + ww)[:, None, None])
    )
    return inside[:, None]  # (N, 1, H, W)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a `size` x `size` square per example, centred anywhere, clipped at the border
    (DeVries & Taylor 2017, arXiv:1708.04552)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=x.device)
    top, left = cy - size // 2, cx - size // 2
    side = torch.full_like(cy, size)
    return x.masked_fill(_box_mask(x, top, left, side, side), 0.0)


def random_erasing(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """With probability `p` per example, fill a random rectangle (area `scale`, aspect
    `ratio`, log-uniform) with uniform noise (Zhong et al. 2020, arXiv:1708.04896)."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    area = (scale[0] + (scale[1] - scale[0]) * _uniform(n, x, generator)) * h * w
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _uniform(
        n, x, generator
    )
    aspect = torch.exp(log_r)
    hh = torch.sqrt(area * aspect).round().clamp(1, h).long()
    ww = torch.sqrt(area / aspect).round().clamp(1, w).long()
    top = (_uniform(n, x, generator) * (h - hh + 1)).long()
    left = (_uniform(n, x, generator) * (w - ww + 1)).long()
    apply = (_uniform(n, x, generator) < p)[:, None, None, None]
    mask = _box_mask(x, top, left, hh, ww) & apply
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(mask, noise, x)


def gaussian_noise(
    x: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add N(0, std^2) noise and clamp to [0, 1]."""
    if std <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp_(0.0, 1.0)


class BatchAugment:
    """A fixed sequence of batch augmentations: `augment(x, generator) -> x`."""

    def __init__(
        self, ops: list[tuple[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]]]
    ):
        self.ops = ops

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for _, op in self.ops:
            x = op(x, generator)
        return x

    def __repr__(self) -> str:
        return f"BatchAugment({', '.join(name for name, _ in self.ops)})"


def build_augment(cfg: AugmentConfig) -> BatchAugment | None:
    """The augmentations `cfg` enables, in the documented order; None when none is."""
    ops = []
    if cfg.crop_padding:
        ops.append(("crop", lambda x, g: random_crop(x, cfg.crop_padding, g)))
    if cfg.flip:
        ops.append(("flip", lambda x, g: random_flip(x, g)))
    if cfg.rotation:
        ops.append(("rotation", lambda x, g: random_rotation(x, cfg.rotation, g)))
    if cfg.cutout:
        ops.append(("cutout", lambda x, g: cutout(x, cfg.cutout, g)))
    if cfg.random_erasing:
        ops.append(("erasing", lambda x, g: random_erasing(x, cfg.random_erasing, g)))
    if cfg.noise_std:
        ops.append(("noise", lambda x, g: gaussian_noise(x, cfg.noise_std, g)))
    return BatchAugment(ops) if ops else None
