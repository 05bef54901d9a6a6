"""Open-world negatives: inputs that belong to no class, trained towards an all-zero target.

Two makers, as in the "newlogic" research code: `scramble` cuts each image into square blocks
and shuffles them (block 1 = pixel scramble), destroying the shape while keeping the pixel
statistics; `overlay` pairs images of *different* classes, scales each by U(0.7, 1.0) and takes
the pixel-wise maximum. Both are batched, on the input's device, with an explicit generator.
Their targets are all-zero rows, for sigmoid/MSE or BCE objectives (never softmax).
"""

from __future__ import annotations

import torch

__all__ = ["negative_targets", "overlay", "scramble"]


def scramble(x: torch.Tensor, block: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle the `block` x `block` tiles of every image (each image its own permutation).

    Args:
        x: images (N, C, H, W); H and W must be multiples of `block`.
        block: tile side in pixels (1 shuffles single pixels).
    """
    n, c, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"scramble: image {h}x{w} is not a multiple of block {block}")
    gh, gw = h // block, w // block
    tiles = x.reshape(n, c, gh, block, gw, block).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n, gh * gw, c, block, block)  # (N, tiles, C, b, b)
    keys = torch.rand(n, gh * gw, generator=generator, device=x.device)
    order = keys.argsort(dim=1)
    tiles = torch.gather(tiles, 1, order[:, :, None, None, None].expand_as(tiles))
    tiles = tiles.reshape(n, gh, gw, c, block, block).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(n, c, h, w)


def overlay(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pixel-wise max of each image and a partner of a different class, both scaled U(0.7, 1).

    Pairs come from a random permutation; an image whose partner has its own label is paired
    with the next image of a different label in the batch instead. A batch of one class raises.
    """
    n = x.shape[0]
    if bool((y == y[0]).all()):
        raise ValueError("overlay needs at least two classes in the batch")
    perm = torch.randperm(n, generator=generator, device=x.device)
    same = y[perm] == y
    if bool(same.any()):
        # for each clash, take the first index (in permuted order) with a different label
        diff = y[None, perm] != y[:, None]  # (N, N)
        first = diff.float().argmax(dim=1)
        perm = torch.where(same, perm[first], perm)
    shape = (n,) + (1,) * (x.dim() - 1)
    a = torch.empty(shape, device=x.device).uniform_(0.7, 1.0, generator=generator)
    b = torch.empty(shape, device=x.device).uniform_(0.7, 1.0, generator=generator)
    return torch.maximum(a * x, b * x[perm])


def negative_targets(n: int, num_classes: int, device: torch.device | None = None) -> torch.Tensor:
    """All-zero multi-hot targets (N, C) for negatives."""
    return torch.zeros(n, num_classes, device=device)
