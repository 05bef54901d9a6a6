"""Training-time augmentations of whole batches, on the batch's device, with an explicit generator.

Each op takes images (N, C, H, W) in [0, 1] and returns a new batch of the same shape, dtype and
range; the input is never modified. Every example draws its own parameters, all at once (no
Python loop over examples), from `generator`: a `torch.Generator` that must live on the batch's
device (a CPU generator for CPU tensors, `torch.Generator(device=x.device)` for CUDA ones), or
None for the device's global generator. A trainer keeps one generator and saves its state in
its checkpoints, so a resumed run draws the same augmentations as an uninterrupted one.

Each op is a stateless function beside a thin callable class holding its settings:

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(8, 3, 32, 32)
    >>> random_crop(x, 4, g).shape
    torch.Size([8, 3, 32, 32])
    >>> augment = BatchAugment([RandomCrop(4), RandomFlip(), Cutout(16)])
    >>> augment(x, g).shape
    torch.Size([8, 3, 32, 32])

`build_augment` composes the ops an `AugmentConfig` enables in this order: random crop, flip,
rotation (the geometric ones), Cutout, random erasing (occlusions, drawn on the final geometry
so they stay axis-aligned rectangles), Gaussian noise (last, so it covers every pixel).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nettle.config import AugmentConfig

__all__ = [
    "BatchAugment",
    "Cutout",
    "GaussianNoise",
    "RandomCrop",
    "RandomErasing",
    "RandomFlip",
    "RandomRotation",
    "build_augment",
    "cutout",
    "gaussian_noise",
    "random_crop",
    "random_erasing",
    "random_flip",
    "random_rotation",
    "rotate",
]

Generator = torch.Generator | None
_ERASING_TRIES = 10


def _check_generator(x: torch.Tensor, generator: Generator) -> None:
    if generator is None:
        return
    g, d = generator.device, x.device
    if g.type != d.type or (g.index is not None and d.index is not None and g.index != d.index):
        raise ValueError(
            f"the generator is on {g} but the batch is on {d}; "
            "create it with torch.Generator(device=x.device)"
        )


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Uniform [0, 1) float32 numbers on x's device."""
    return torch.rand(shape, generator=generator, device=x.device)


def _randint(high: int, n: int, x: torch.Tensor, generator: Generator) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=x.device)


def random_crop(x: torch.Tensor, padding: int, generator: Generator = None) -> torch.Tensor:
    """Zero-pad each side by `padding` and crop back to (H, W) at a random offset per example.

    Each output is the window `pad(x)[i, :, dy:dy + H, dx:dx + W]` of the padded input with
    `dy, dx` uniform in {0, ..., 2 * padding}.
    """
    _check_generator(x, generator)
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = _randint(2 * padding + 1, n, x, generator)
    dx = _randint(2 * padding + 1, n, x, generator)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (N, W)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_flip(x: torch.Tensor, generator: Generator = None, p: float = 0.5) -> torch.Tensor:
    """Flip each example left-right with probability `p`."""
    _check_generator(x, generator)
    mask = (_rand((x.shape[0],), x, generator) < p)[:, None, None, None]
    return torch.where(mask, x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate example i by `degrees[i]` counter-clockwise about its centre.

    Bilinear sampling, zeros outside the image; the rotation is in pixel space, so non-square
    images are not sheared.
    """
    h, w = x.shape[-2:]
    angle = torch.deg2rad(degrees.to(device=x.device, dtype=torch.float32))
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    # output pixel -> input location, in grid_sample's [-1, 1] coordinates scaled per axis
    row_x = torch.stack([cos, -sin * (h / w), zero], 1)
    row_y = torch.stack([sin * (w / h), cos, zero], 1)
    theta = torch.stack([row_x, row_y], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)


def random_rotation(x: torch.Tensor, degrees: float, generator: Generator = None) -> torch.Tensor:
    """Rotate each example by an angle uniform in [-degrees, degrees] (see `rotate`)."""
    _check_generator(x, generator)
    if degrees <= 0:
        return x
    return rotate(x, (2 * _rand((x.shape[0],), x, generator) - 1) * degrees)


def _box_mask(
    shape: torch.Size, top: torch.Tensor, left: torch.Tensor, hh: torch.Tensor, ww: torch.Tensor
) -> torch.Tensor:
    """(N, 1, H, W) masks of the boxes rows [top, top + hh), columns [left, left + ww)."""
    h, w = shape[-2:]
    ys = torch.arange(h, device=top.device)[None, :, None]
    xs = torch.arange(w, device=top.device)[None, None, :]
    top, left, bottom, right = (t[:, None, None] for t in (top, left, top + hh, left + ww))
    inside = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
    return inside[:, None]


def cutout(x: torch.Tensor, size: int, generator: Generator = None) -> torch.Tensor:
    """Zero a `size` x `size` square in each example, on every channel.

    The square's centre is a pixel drawn uniformly over the whole image, so squares near the
    border are clipped to the part inside (DeVries & Taylor 2017, arXiv:1708.04552). The square
    covers rows [cy - size // 2, cy - size // 2 + size), likewise for columns.
    """
    _check_generator(x, generator)
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy, cx = _randint(h, n, x, generator), _randint(w, n, x, generator)
    side = torch.full_like(cy, size)
    return x.masked_fill(_box_mask(x.shape, cy - size // 2, cx - size // 2, side, side), 0.0)


def random_erasing(
    x: torch.Tensor,
    p: float,
    generator: Generator = None,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | str = "random",
) -> torch.Tensor:
    """With probability `p` per example, fill a random rectangle with `value`.

    Random erasing (Zhong et al. 2020, arXiv:1708.04896): the rectangle's area is a fraction
    of the image uniform in `scale`, its aspect ratio (height / width) log-uniform in `ratio`,
    its position uniform over the places where it fits. Like the paper, a rectangle that does
    not fit is drawn again (up to 10 times, all drawn at once); an example with no fitting draw
    is left as it is.

    Args:
        value: a constant in [0, 1], or "random" for uniform noise in [0, 1] per pixel.
    """
    _check_generator(x, generator)
    if not (value == "random" or isinstance(value, (int, float))):
        raise ValueError(f"value must be a number or 'random', got {value!r}")
    if p <= 0:
        return x
    n, _, h, w = x.shape
    tries = (n, _ERASING_TRIES)
    area = (scale[0] + (scale[1] - scale[0]) * _rand(tries, x, generator)) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(tries, x, generator))
    hh = torch.sqrt(area * aspect).round().long()
    ww = torch.sqrt(area / aspect).round().long()
    fits = (hh >= 1) & (hh < h) & (ww >= 1) & (ww < w)
    first = fits.int().argmax(1, keepdim=True)  # the first draw that fits
    hh, ww = hh.gather(1, first).squeeze(1), ww.gather(1, first).squeeze(1)
    top = (_rand((n,), x, generator) * (h - hh + 1)).long()
    left = (_rand((n,), x, generator) * (w - ww + 1)).long()
    apply = (_rand((n,), x, generator) < p) & fits.any(1)
    mask = _box_mask(x.shape, top, left, hh, ww) & apply[:, None, None, None]
    if value == "random":
        fill = torch.rand(x.shape, generator=generator, device=x.device).to(x.dtype)
        return torch.where(mask, fill, x)
    return x.masked_fill(mask, float(value))


def gaussian_noise(x: torch.Tensor, std: float, generator: Generator = None) -> torch.Tensor:
    """Add independent N(0, std^2) noise to every pixel, then clamp to [0, 1]."""
    _check_generator(x, generator)
    if std <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device).to(x.dtype)
    return (x + std * noise).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class RandomCrop:
    """`random_crop` with a fixed `padding`."""

    padding: int

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        return random_crop(x, self.padding, generator)


@dataclass(frozen=True)
class RandomFlip:
    """`random_flip` with a fixed probability `p`."""

    p: float = 0.5

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        return random_flip(x, generator, self.p)


@dataclass(frozen=True)
class RandomRotation:
    """`random_rotation` with a fixed maximum angle in degrees."""

    degrees: float

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        return random_rotation(x, self.degrees, generator)


@dataclass(frozen=True)
class Cutout:
    """`cutout` with a fixed square side."""

    size: int

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        return cutout(x, self.size, generator)


@dataclass(frozen=True)
class RandomErasing:
    """`random_erasing` with fixed settings (Zhong et al.'s defaults)."""

    p: float = 0.5
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: float | str = "random"

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        return random_erasing(x, self.p, generator, self.scale, self.ratio, self.value)


@dataclass(frozen=True)
class GaussianNoise:
    """`gaussian_noise` with a fixed standard deviation."""

    std: float

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        return gaussian_noise(x, self.std, generator)


Op = Callable[[torch.Tensor, Generator], torch.Tensor]


class BatchAugment:
    """A fixed sequence of batch ops, applied in order: `augment(x, generator) -> x`.

    Args:
        ops: callables `op(x, generator) -> x`, such as `RandomCrop(4)`.
    """

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = tuple(ops)

    def __call__(self, x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
        _check_generator(x, generator)
        for op in self.ops:
            x = op(x, generator)
        return x

    def __len__(self) -> int:
        return len(self.ops)

    def __repr__(self) -> str:
        return f"BatchAugment({', '.join(map(repr, self.ops))})"


def build_augment(cfg: AugmentConfig) -> BatchAugment | None:
    """The ops `cfg` enables, in the module's documented order; None when none is enabled."""
    ops: list[Op] = []
    if cfg.crop_padding:
        ops.append(RandomCrop(cfg.crop_padding))
    if cfg.flip:
        ops.append(RandomFlip())
    if cfg.rotation:
        ops.append(RandomRotation(cfg.rotation))
    if cfg.cutout:
        ops.append(Cutout(cfg.cutout))
    if cfg.random_erasing:
        ops.append(RandomErasing(cfg.random_erasing))
    if cfg.noise_std:
        ops.append(GaussianNoise(cfg.noise_std))
    return BatchAugment(ops) if ops else None
