"""Feature visualisation by optimisation (Olah, Mordvintsev and Schubert 2017, Distill), as Lucid.

An image is parameterised (`pixel` or `fourier`: a spectrum scaled by 1/f, the energy of
natural images, with Lucid's decorrelated colour for 3 channels, then a sigmoid into [0, 1]),
passed through random transforms (Lucid's `standard_transforms`: pad 12 with 0.5, jitter 8,
scale 0.90-1.10, rotate -10..10 degrees with extra weight on 0, jitter 4; pixel amounts scaled
to the image size relative to Lucid's 128), resized back to the rendered size when a transform
changed it, and optimised with Adam (lr 0.05, 512 steps) to maximise an objective on the
model's activations, with Lucid's redirected ReLU gradient (`nettle.inspect.redirect`) so that
units off for the start image still rise. Objectives (`neuron`, `channel`, `direction`,
`deepdream`, `class_model`) combine with `+`, `-` and scalar `*`. Besides the recorded layers an
objective may read the rendered image itself under the key `IMAGE` (before the transforms).

The model is put in eval mode (restored after), hooks are removed after, and gradients are
taken with `torch.autograd.grad` with respect to the image parameters only, so the model's
parameters and their `.grad` are untouched. On CPU a seed fixes the image.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from html import escape

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from nettle.inspect.activations import eval_mode, model_device, record_layers, run_recorded
from nettle.inspect.redirect import redirected_relu

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "IMAGE",
    "FeatureVis",
    "Objective",
    "channel",
    "class_model",
    "deepdream",
    "direction",
    "fourier_image",
    "jitter",
    "neuron",
    "pad",
    "pixel_image",
    "random_rotate",
    "random_scale",
    "render",
    "standard_transforms",
    "to_valid_image",
]

Acts = dict[str, torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# Square root of ImageNet's RGB colour correlation (Lucid's published values, param/color.py).
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))

IMAGE = "<image>"
"""The key under which `render` hands objectives the rendered image (1, C, H, W)."""


class Objective:
    """A function of the recorded activations giving one value per image, to maximise."""

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Sequence[str], name: str):
        self.fn, self.layers, self.name = fn, tuple(dict.fromkeys(layers)), name

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective(
                lambda a: self(a) + other(a), self.layers + other.layers, f"{self} + {other}"
            )
        return Objective(lambda a: self(a) + other, self.layers, f"{self.name} + {other}")

    __radd__ = __add__  # so that sum([...]) works

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __mul__(self, scale: float) -> Objective:
        if not isinstance(scale, (int, float)):
            raise TypeError("objectives multiply only with numbers")
        return Objective(lambda a: scale * self(a), self.layers, f"{scale} * {self.name}")

    __rmul__ = __mul__


def _unit(a: torch.Tensor, c: int) -> torch.Tensor:
    if c >= a.shape[1]:
        raise ValueError(f"the layer has {a.shape[1]} channels, no channel {c}")
    return a[:, c]


def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None) -> Objective:
    """One activation of a channel: at `(y, x)`, by default the centre of the map (as Lucid)."""

    def fn(acts: Acts) -> torch.Tensor:
        a = _unit(acts[layer], channel)
        if a.dim() == 1:
            return a
        pos = [x if x is not None else a.shape[-1] // 2]
        if a.dim() == 3:
            pos.insert(0, y if y is not None else a.shape[-2] // 2)
        return a[(slice(None), *pos)]

    return Objective(fn, [layer], f"neuron({layer}:{channel})")


def channel(layer: str, c: int) -> Objective:
    """The mean over space of one channel."""

    def fn(acts: Acts) -> torch.Tensor:
        a = _unit(acts[layer], c)
        return a.flatten(1).mean(1) if a.dim() > 1 else a

    return Objective(fn, [layer], f"channel({layer}:{c})")


def direction(layer: str, vector: Sequence[float] | torch.Tensor) -> Objective:
    """The dot product of the channel vector with `vector`, averaged over space (as Lucid)."""
    v = torch.as_tensor(vector, dtype=torch.float32)

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        if a.shape[1] != len(v):
            raise ValueError(f"direction has {len(v)} entries, layer {layer!r} {a.shape[1]}")
        dot = (a * v.to(a).view(1, -1, *([1] * (a.dim() - 2)))).sum(1)
        return dot.flatten(1).mean(1) if dot.dim() > 1 else dot

    return Objective(fn, [layer], f"direction({layer})")


def deepdream(layer: str) -> Objective:
    """The mean squared activation of a layer (Mordvintsev et al. 2015, DeepDream)."""
    return Objective(lambda a: a[layer].pow(2).flatten(1).mean(1), [layer], f"deepdream({layer})")


def class_model(c: int, l2: float = 0.01, output: str = "") -> Objective:
    """A class model (Simonyan, Vedaldi and Zisserman 2014, "Deep Inside Convolutional Networks").

    The unnormalised class score (logit `c`, before any softmax) minus an L2 penalty on the
    image: `S_c(I) - l2 * ||I - 0.5||^2` (the paper centres its images on the data mean; ours
    lie in [0, 1] and are centred on grey). `output` names the module whose output holds the
    logits (N, K); "" is the whole model. As in the paper, render it in pixel space without
    transforms: `render(model, class_model(3), shape, param="pixel", transforms=[],
    decorrelate=False)`.
    """
    if l2 < 0:
        raise ValueError(f"l2 must be at least 0, got {l2}")

    def fn(acts: Acts) -> torch.Tensor:
        logits = acts[output]
        if logits.dim() != 2:
            where = f"layer {output!r}" if output else "the model"
            raise ValueError(f"class_model needs logits (N, K) from {where}, got {logits.dim()}-D")
        score = _unit(logits, c)
        if not l2 or IMAGE not in acts:
            return score
        return score - l2 * (acts[IMAGE] - 0.5).pow(2).flatten(1).sum(1)

    return Objective(fn, [output, IMAGE] if l2 else [output], f"class_model({c})")


def to_valid_image(t: torch.Tensor, decorrelate: bool = True) -> torch.Tensor:
    """Mix colours with Lucid's normalised correlation square root (3 channels), then sigmoid."""
    if decorrelate and t.shape[1] == 3:
        c = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=t.dtype, device=t.device)
        c = c / c.norm(dim=0).max()
        t = torch.einsum("ij,njhw->nihw", c, t)
    return torch.sigmoid(t)


ImageFn = tuple[list[torch.Tensor], Callable[[], torch.Tensor]]


def pixel_image(
    shape: Sequence[int], sd: float = 0.01, decorrelate: bool = True, generator=None, device=None
) -> ImageFn:
    """`(params, image_fn)`: one parameter per pixel; `image_fn()` is (1, C, H, W) in [0, 1]."""
    p = (torch.randn((1, *shape), generator=generator) * sd).to(device).requires_grad_(True)
    return [p], lambda: to_valid_image(p, decorrelate)


def fourier_image(
    shape: Sequence[int],
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool = True,
    generator=None,
    device=None,
) -> ImageFn:
    """`(params, image_fn)`: a spectrum scaled by 1 / max(f, 1/max(H, W))^decay * sqrt(HW).

    The inverse real FFT of the scaled spectrum, divided by 4 (Lucid's `fft_image`), goes
    through `to_valid_image`.
    """
    c, h, w = shape
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    freqs = (fx * fx + fy * fy).sqrt()
    scale = (1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay_power) * math.sqrt(h * w)
    scale = scale.to(device)
    spec = torch.randn((1, c, *freqs.shape, 2), generator=generator) * sd
    spec = spec.to(device).requires_grad_(True)

    def image_fn() -> torch.Tensor:
        img = torch.fft.irfft2(torch.view_as_complex(spec) * scale, s=(h, w)) / 4.0
        return to_valid_image(img, decorrelate)

    return [spec], image_fn


def _choice(options: Sequence, gen: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=gen))]


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by `width` pixels of a constant."""
    return lambda t, gen: F.pad(t, [width] * 4, value=value) if width else t


def jitter(d: int) -> Transform:
    """A random crop `d` pixels smaller in each dimension (Lucid's jitter)."""

    def fn(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        h, w = t.shape[-2:]
        if d <= 0 or d >= min(h, w):
            return t
        dy, dx = (int(v) for v in torch.randint(d + 1, (2,), generator=gen))
        return t[..., dy : dy + h - d, dx : dx + w - d]

    return fn


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from `scales` (bilinear)."""

    def fn(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        s = _choice(scales, gen)
        size = [max(1, round(n * s)) for n in t.shape[-2:]]
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    return fn


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle in degrees drawn from `angles` (zeros fill)."""

    def fn(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        a = math.radians(_choice(angles, gen))
        if a == 0:
            return t
        rot = [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]
        theta = torch.tensor([rot], dtype=t.dtype, device=t.device).expand(len(t), 2, 3)
        grid = F.affine_grid(theta, list(t.shape), align_corners=False)
        return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    return fn


def standard_transforms(size: int = 128) -> list[Transform]:
    """Lucid's standard transforms, pixel amounts scaled by `size / 128` (at least 1)."""

    def px(n: int) -> int:
        return max(1, round(n * size / 128))

    return [
        pad(px(12)),
        jitter(px(8)),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate([*range(-10, 11), *[0] * 5]),
        jitter(px(4)),
    ]


@dataclass
class FeatureVis:
    """A rendered image (C, H, W) in [0, 1], the objective per step and at the end."""

    image: torch.Tensor
    curve: list[float] = field(default_factory=list)
    value: float = float("nan")
    objective: str = ""

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image.shape))
        return (
            f"FeatureVis(objective={self.objective!r}, image={shape}, steps={len(self.curve)}, "
            f"value={self.value:.4g})"
        )

    def _png(self) -> bytes | None:
        """The image as PNG bytes (grey or RGB), or None for other channel counts."""
        if self.image.dim() != 3 or self.image.shape[0] not in (1, 3):
            return None
        pixels = (self.image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        array = pixels.permute(1, 2, 0).squeeze(2).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    def _repr_html_(self) -> str:
        shape = "x".join(map(str, self.image.shape))
        rows = [("objective", self.objective), ("image", shape)]
        rows += [("steps", str(len(self.curve))), ("value", f"{self.value:.4g}")]
        cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        data = self._png()
        if data is not None:
            src = base64.b64encode(data).decode()
            cells += (
                f'<tr><td colspan="2"><img alt="{escape(self.objective)}" width="128" '
                f'style="image-rendering: pixelated" src="data:image/png;base64,{src}"></td></tr>'
            )
        return f"<table>{cells}</table>"


def render(
    model: nn.Module,
    objective: Objective,
    shape: Sequence[int] = (3, 128, 128),
    steps: int = 512,
    lr: float = 0.05,
    seed: int = 0,
    param: str = "fourier",
    transforms: Sequence[Transform] | None = None,
    decorrelate: bool = True,
    redirect_relu: bool = True,
) -> FeatureVis:
    """Optimise an image to maximise `objective` (Adam); `transforms=None`: the standard ones.

    `redirect_relu` lets gradient through `nn.ReLU`s that are off for the image (as Lucid
    does; see `nettle.inspect.redirect`), so a ReLU channel dark for a grey start still rises.

    `curve` holds the objective on the transformed image at each step and `value` the
    objective on the final image without transforms.
    """
    if param not in ("fourier", "pixel"):
        raise ValueError(f"param must be 'fourier' or 'pixel', got {param!r}")
    _, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    make = fourier_image if param == "fourier" else pixel_image
    params, image_fn = make(shape, decorrelate=decorrelate, generator=gen, device=device)
    tfs = standard_transforms(max(h, w)) if transforms is None else list(transforms)
    layers = [n for n in objective.layers if n != IMAGE]
    opt = torch.optim.Adam(params, lr=lr)
    curve: list[float] = []
    with (
        eval_mode(model),
        redirected_relu(model) if redirect_relu else nullcontext(),  # before the recording hooks
        record_layers(model, layers, detach=False) as rec,
    ):
        for _ in range(steps):
            t = image = image_fn()
            for tf in tfs:
                t = tf(t, gen)
            if t.shape[-2:] != (h, w):
                t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
            run_recorded(model, t, rec)
            value = objective({**rec, IMAGE: image}).mean()
            grads = torch.autograd.grad(-value, params)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            curve.append(float(value.detach()))
        with torch.no_grad():
            image = image_fn()
            run_recorded(model, image, rec)
            final = float(objective({**rec, IMAGE: image}).mean())
    return FeatureVis(image[0].detach().cpu(), curve, final, objective.name)
