"""Probes of what a unit responds to: top patches, patch sensitivity, cut-and-paste, augmentation
effects, activation along a path between two inputs, predicted probabilities.

All run the model in eval mode (each module's mode restored after), with hooks removed after;
gradients are taken with `torch.autograd.grad` on the input, so parameters' `.grad` stay as
they were. Single images are (C, H, W); results come back on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nettle.inspect.activations import (
    eval_mode,
    iter_batches,
    model_device,
    record_layers,
    run_recorded,
    top_k,
)
from nettle.inspect.trace import FieldTracer, Rect, get_item

__all__ = [
    "AugmentationEffect",
    "PatchSensitivity",
    "PatchTransfer",
    "Probabilities",
    "TopPatches",
    "augmentation_effect",
    "interpolate_activation",
    "layer_output",
    "paste_patch",
    "patch_sensitivity",
    "patch_transfer_effect",
    "prediction_probabilities",
    "top_patches",
]


def layer_output(model: nn.Module, layer: str, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """The output of `layer` for a batch `x` (the forward stops there); keeps autograd if asked."""
    with (
        eval_mode(model),
        torch.set_grad_enabled(grad),
        record_layers(model, [layer], detach=not grad) as rec,
    ):
        run_recorded(model, x.to(model_device(model)), rec)
        return rec[layer]


@dataclass
class TopPatches:
    """The top-k inputs of a channel, the argmax positions and the input patches behind them."""

    layer: str
    channel: int
    indices: list[int]
    values: list[float]
    positions: list[tuple[int, ...]]
    rects: list[Rect]
    images: list[torch.Tensor]
    patches: list[torch.Tensor]


def top_patches(
    model: nn.Module, data: Any, layer: str, channel: int, k: int = 9, batch_size: int = 256
) -> TopPatches:
    """The k input patches behind the k largest activations of a channel (argmax per input)."""
    best = top_k(model, data, layer, channel, k, reduce="max", batch_size=batch_size)
    if not best.positions:
        raise ValueError(f"layer {layer!r} has no spatial map to take patches from")
    images = [get_item(data, i).detach().cpu() for i in best.indices]
    tracer = FieldTracer(model, tuple(images[0].shape))
    rects = [tracer.rect(layer, p) for p in best.positions]
    patches = [r.crop(img) for r, img in zip(rects, images)]
    return TopPatches(
        layer, channel, best.indices, best.values, best.positions, rects, images, patches
    )


def _argmax(a: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(a.argmax(), a.shape))


@dataclass
class PatchSensitivity:
    """Input gradient of one activation; `outside` is max |gradient| outside the rectangle."""

    position: tuple[int, ...]
    value: float
    rect: Rect
    gradient: torch.Tensor
    patch_gradient: torch.Tensor
    outside: float


def patch_sensitivity(
    model: nn.Module,
    layer: str,
    channel: int,
    x: torch.Tensor,
    position: Sequence[int] | None = None,
) -> PatchSensitivity:
    """d activation / d input for the activation at `position` (default: the channel's argmax).

    `patch_gradient` is the gradient restricted to the receptive-field patch; `outside` checks
    the tracing (it is exactly 0 when the rectangle holds every pixel that matters).
    """
    xg = x[None].to(model_device(model)).clone().requires_grad_(True)
    a = layer_output(model, layer, xg, grad=True)[0, channel]
    pos = tuple(position) if position is not None else _argmax(a.detach())
    with torch.enable_grad():
        (g,) = torch.autograd.grad(a[pos], xg)
    g = g[0].detach().cpu()
    rect = FieldTracer(model, tuple(x.shape)).rect(layer, pos)
    mask = torch.ones(g.shape[-2:], dtype=torch.bool)
    rect.crop(mask).fill_(False)
    outside = float(g.abs()[..., mask].max()) if mask.any() else 0.0
    return PatchSensitivity(pos, float(a[pos].detach()), rect, g, rect.crop(g), outside)


def paste_patch(
    src_img: torch.Tensor, rect: Rect, dst_img: torch.Tensor, at: Sequence[int] | None = None
) -> torch.Tensor:
    """A copy of `dst_img` with `src_img`'s `rect` pasted with its top-left at `at`.

    `at` defaults to the rectangle's own place; the patch must fit inside `dst_img`.
    """
    top, left = at if at is not None else (rect.top, rect.left)
    h, w = dst_img.shape[-2:]
    if top < 0 or left < 0 or top + rect.height > h or left + rect.width > w:
        raise ValueError(f"a {rect.height}x{rect.width} patch at {(top, left)} leaves {h}x{w}")
    out = dst_img.clone()
    out[..., top : top + rect.height, left : left + rect.width] = rect.crop(src_img)
    return out


@dataclass
class PatchTransfer:
    """Activation of a channel before and after pasting a patch of `src` into `dst`.

    `src_value` is the activation at `position` in `src`; `before`/`after` the activation at
    the same position in `dst` and in the pasted image (equal to `src_value` when the whole
    receptive field is pasted in place); `before_max`/`after_max` the maxima over the maps.
    """

    rect: Rect
    at: tuple[int, int]
    position: tuple[int, ...]
    src_value: float
    before: float
    after: float
    before_max: float
    after_max: float
    before_map: torch.Tensor
    after_map: torch.Tensor
    image: torch.Tensor


def patch_transfer_effect(
    model: nn.Module,
    layer: str,
    channel: int,
    src: torch.Tensor,
    dst: torch.Tensor,
    rect: Rect | None = None,
    at: Sequence[int] | None = None,
    position: Sequence[int] | None = None,
) -> PatchTransfer:
    """Cut the patch behind `src`'s activation at `position` (default: argmax), paste into `dst`.

    `rect` overrides the receptive field as the patch; `at` moves it (default: same place).
    """
    maps = layer_output(model, layer, torch.stack([src, dst]))[:, channel].cpu()
    pos = tuple(position) if position is not None else _argmax(maps[0])
    if rect is None:
        rect = FieldTracer(model, tuple(src.shape)).rect(layer, pos)
    where = (rect.top, rect.left) if at is None else (int(at[0]), int(at[1]))
    pasted = paste_patch(src, rect, dst, where)
    after = layer_output(model, layer, pasted[None])[0, channel].cpu()
    return PatchTransfer(
        rect,
        where,
        pos,
        float(maps[0][pos]),
        float(maps[1][pos]),
        float(after[pos]),
        float(maps[1].max()),
        float(after.max()),
        maps[1],
        after,
        pasted,
    )


@dataclass
class AugmentationEffect:
    """Feature maps of a layer for an input and its augmentation, and their difference."""

    augmented: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor
    difference: torch.Tensor
    relative_change: float  # ||after - before|| / ||before||


def augmentation_effect(
    model: nn.Module, layer: str, x: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor]
) -> AugmentationEffect:
    """Apply `augment` to `x` (C, H, W) and compare the layer's maps (C', h, w) before/after."""
    xa = augment(x.clone())
    before = layer_output(model, layer, x[None])[0].cpu()
    after = layer_output(model, layer, xa[None])[0].cpu()
    if before.shape != after.shape:
        raise ValueError(
            f"the augmentation changes layer {layer!r}'s map from {tuple(before.shape)} "
            f"to {tuple(after.shape)}"
        )
    diff = after - before
    rel = float(diff.norm() / before.norm().clamp_min(1e-12))
    return AugmentationEffect(xa.detach().cpu(), before, after, diff, rel)


def interpolate_activation(
    model: nn.Module,
    layer: str,
    unit: int | Sequence[int] | None,
    x0: torch.Tensor,
    x1: torch.Tensor,
    steps: int = 21,
    reduce: str = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit's activation along the straight path `(1 - alpha) x0 + alpha x1`, alpha in [0, 1].

    `unit`: a channel index (its map reduced over space by `max` or `mean`), a full position
    `(c, y, x)`, or None for every channel (values then (steps, C)).
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    alphas = torch.linspace(0.0, 1.0, steps)
    shape = (-1, *[1] * x0.dim())
    path = (1 - alphas.view(shape)) * x0[None] + alphas.view(shape) * x1[None]
    out = layer_output(model, layer, path).float().cpu()
    if unit is not None and not isinstance(unit, int):
        return alphas, out[(slice(None), *unit)]
    if out.dim() > 2:
        out = out.flatten(2).amax(2) if reduce == "max" else out.flatten(2).mean(2)
    return alphas, out if unit is None else out[:, unit]


@dataclass
class Probabilities:
    """Predicted probabilities (N, K) and the labels when the data has them."""

    probs: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def confidence(self) -> torch.Tensor:
        return self.probs.max(1).values

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)

    @property
    def correct(self) -> torch.Tensor | None:
        return None if self.labels is None else self.predicted == self.labels


def _pairs(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    tensors = data if isinstance(data, tuple) else getattr(data, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        for i in range(0, len(tensors[0]), batch_size):
            yield tensors[0][i : i + batch_size], tensors[1][i : i + batch_size]
        return
    if isinstance(data, torch.Tensor) or tensors is not None:
        for x in iter_batches(data, batch_size):
            yield x, None
        return
    from torch.utils.data import DataLoader

    for batch in DataLoader(data, batch_size=batch_size):
        yield (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)


def prediction_probabilities(
    model: nn.Module, data: Any, activation: str = "softmax", batch_size: int = 256
) -> Probabilities:
    """Class probabilities over `data`: softmax or sigmoid of the logits, or `none` (as is)."""
    fns = {"softmax": lambda z: z.softmax(1), "sigmoid": torch.sigmoid, "none": lambda z: z}
    if activation not in fns:
        raise ValueError(f"activation must be one of {sorted(fns)}, got {activation!r}")
    device = model_device(model)
    probs, labels = [], []
    with eval_mode(model), torch.no_grad():
        for x, y in _pairs(data, batch_size):
            probs.append(fns[activation](model(x.to(device)).float()).cpu())
            if y is not None:
                labels.append(y.cpu())
    return Probabilities(torch.cat(probs), torch.cat(labels) if labels else None)
