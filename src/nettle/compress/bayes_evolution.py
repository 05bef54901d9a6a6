"""How the first Bayesian layer's weights and dropout rates evolve during training.

As in the pictures of the authors' tutorial (Louizos, Ullrich & Welling 2017,
KarenUllrich/Tutorial_BayesianCompressionForDL): the posterior means `w * z` of the first layer
and the `log alpha` of its groups, at chosen epochs, side by side. `EvolutionRecorder` keeps a
frame (the layer's `weight_mu`, `z_mu`, `z_logvar`, on the CPU, at most `max_weights` weights:
the first output units) at the start of every `every`-th epoch; its `state()` goes into the
training checkpoint, so a resumed run keeps the frames recorded before. `record_final` adds the
trained layer. `plot_evolution` draws a strip (weights above, log alpha below, one column per
frame), `evolution_gif` an animation, and `write_evolution` writes both (`evolution.png`,
`evolution.gif`) into a folder (`nettle.files.OutputFolder`).

A Linear layer is drawn as its (output x input) matrix, its input units' log alpha as a square
image when their number is a square (8x8 digits: 64) and a row otherwise; a convolution as a
grid of its filters (input channels side by side) and a grid of its output channels' log alpha.
Pruned groups (`log alpha >= threshold`) are drawn blank in the log-alpha row.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from nettle.files import OutputFolder
from nettle.nn.bayesian import BayesianLayer, LinearGroupNJ

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn
    from matplotlib.figure import Figure

__all__ = [
    "EvolutionFrame",
    "EvolutionRecorder",
    "evolution_gif",
    "frame_images",
    "plot_evolution",
    "write_evolution",
]

_EPS = 1e-8  # as `BayesianLayer.log_alpha`


@dataclass
class EvolutionFrame:
    """The first layer at the start of `epoch` (epoch = number of epochs trained)."""

    epoch: int
    linear: bool
    weight_mu: torch.Tensor
    z_mu: torch.Tensor
    z_logvar: torch.Tensor

    def log_alpha(self) -> torch.Tensor:
        return self.z_logvar - torch.log(self.z_mu.pow(2) + _EPS)

    def weight(self) -> torch.Tensor:
        """The posterior mean `w * z` of the recorded weights."""
        if self.linear:
            return self.weight_mu * self.z_mu[None, :]
        return self.weight_mu * self.z_mu[: self.weight_mu.shape[0], None, None, None]


class EvolutionRecorder:
    """Record `layer` at the start of every `every`-th epoch (0 = never); `epochs` is the
    length of training (the epoch of the final frame)."""

    def __init__(
        self, layer: BayesianLayer, every: int, epochs: int, max_weights: int = 16384
    ) -> None:
        if every < 0 or max_weights < 1:
            raise ValueError(f"every must be >= 0 and max_weights >= 1, got {every}, {max_weights}")
        self.layer, self.every, self.epochs = layer, every, epochs
        self.linear = isinstance(layer, LinearGroupNJ)
        per_row = layer.weight_mu[0].numel()
        self.rows = max(1, min(layer.weight_mu.shape[0], max_weights // per_row))
        self.frames: list[EvolutionFrame] = []

    def _snapshot(self, epoch: int) -> EvolutionFrame:
        with torch.no_grad():
            w = self.layer.weight_mu[: self.rows]
            z_mu, z_logvar = self.layer.z_mu, self.layer.z_logvar
            if not self.linear:
                z_mu, z_logvar = z_mu[: self.rows], z_logvar[: self.rows]
            copy = [t.detach().to("cpu", torch.float32).clone() for t in (w, z_mu, z_logvar)]
        return EvolutionFrame(epoch, self.linear, *copy)

    def record(self, epoch: int) -> None:
        """Keep the layer as it is at the start of `epoch`, if chosen and not kept already."""
        if self.every and epoch % self.every == 0 and all(f.epoch != epoch for f in self.frames):
            self.frames.append(self._snapshot(epoch))

    def record_final(self) -> None:
        """Keep the trained layer (epoch `epochs`), replacing a frame of that epoch."""
        self.frames = [f for f in self.frames if f.epoch != self.epochs]
        self.frames.append(self._snapshot(self.epochs))

    def state(self) -> list[dict[str, Any]]:
        return [
            {"epoch": f.epoch, "weight_mu": f.weight_mu, "z_mu": f.z_mu, "z_logvar": f.z_logvar}
            for f in self.frames
        ]

    def load_state(self, state: list[dict[str, Any]]) -> None:
        self.frames = [
            EvolutionFrame(int(s["epoch"]), self.linear, s["weight_mu"], s["z_mu"], s["z_logvar"])
            for s in state
        ]


def _grid(tiles: np.ndarray, gap: int = 1) -> np.ndarray:
    """(n, h, w) tiles in a near-square grid, `gap` blank (NaN) pixels between them."""
    n, h, w = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = r * (h + gap), c * (w + gap)
        out[top : top + h, left : left + w] = tile
    return out


def frame_images(frame: EvolutionFrame, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(weights image, log-alpha image) of a frame; pruned groups are NaN in the second."""
    w = frame.weight().numpy()
    la = frame.log_alpha().numpy().astype(np.float32)
    la = np.where(la < threshold, la, np.nan)
    if frame.linear:
        side = math.isqrt(la.size)
        return w, la.reshape(side, side) if side * side == la.size else la[None, :]
    k, c, kh, kw = w.shape
    tiles = w.transpose(0, 2, 1, 3).reshape(k, kh, c * kw)
    return _grid(tiles), _grid(la[:, None, None], gap=0)


def _pick(frames: list[EvolutionFrame], most: int) -> list[EvolutionFrame]:
    frames = sorted(frames, key=lambda f: f.epoch)
    if len(frames) <= most:
        return frames
    idx = np.unique(np.linspace(0, len(frames) - 1, most).round().astype(int))
    return [frames[i] for i in idx]


def _ranges(images: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    wmax = max(float(np.nanmax(np.abs(w))) if np.isfinite(w).any() else 0.0 for w, _ in images)
    las = [la[np.isfinite(la)] for _, la in images]
    finite = np.concatenate(las) if las else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 0.0)
    return wmax or 1.0, lo, max(hi, lo + 1e-6)


def plot_evolution(
    frames: list[EvolutionFrame],
    threshold: float = -3.0,
    most: int = 8,
    scales: tuple[float, float, float] | None = None,
) -> Figure:
    """The strip: one column per frame (at most `most`, evenly chosen), weights above and
    log alpha below, on colour scales shared by the frames (or `scales`: the largest |w|,
    the lowest and highest log alpha)."""
    from matplotlib.figure import Figure

    if not frames:
        raise ValueError("no frames recorded (bayes.record_every: 0?)")
    chosen = _pick(frames, most)
    images = [frame_images(f, threshold) for f in chosen]
    wmax, lo, hi = scales or _ranges(images)
    fig = Figure(figsize=(2.2 * len(chosen) + 0.8, 4.6), layout="constrained")
    axes = fig.subplots(2, len(chosen), squeeze=False)
    for col, (f, (w, la)) in enumerate(zip(chosen, images)):
        kept = int(np.isfinite(la).sum())
        top = axes[0, col].imshow(w, cmap="RdBu_r", vmin=-wmax, vmax=wmax, aspect="auto")
        axes[0, col].set_title(f"epoch {f.epoch}", fontsize=9)
        bottom = axes[1, col].imshow(la, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        axes[1, col].set_title(f"{kept}/{f.z_mu.numel()} kept", fontsize=8)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("w * z (posterior mean)")
    axes[1, 0].set_ylabel(f"log alpha (< {threshold:g})")
    fig.colorbar(top, ax=axes[0, :].tolist(), shrink=0.8)
    fig.colorbar(bottom, ax=axes[1, :].tolist(), shrink=0.8)
    return fig


def evolution_gif(
    frames: list[EvolutionFrame], threshold: float = -3.0, duration_ms: int = 600, most: int = 60
) -> bytes:
    """An animated GIF of the frames (at most `most`, evenly chosen; the one-column strip of
    each, on the scales of all), as bytes."""
    frames = _pick(frames, most)
    scales = _ranges([frame_images(f, threshold) for f in frames])
    pictures = []
    for f in frames:
        buf = io.BytesIO()
        plot_evolution([f], threshold, scales=scales).savefig(buf, format="png", dpi=80)
        pictures.append(Image.open(io.BytesIO(buf.getvalue())).convert("P"))
    out = io.BytesIO()
    pictures[0].save(
        out, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0
    )
    return out.getvalue()


def write_evolution(
    frames: list[EvolutionFrame], folder: str | Path, threshold: float = -3.0
) -> dict[str, Path]:
    """Write `evolution.png` (the strip) and `evolution.gif` into `folder`; {} without frames.

    Raises:
        ValueError: `folder` holds a file of those names that nettle did not write.
    """
    if not frames:
        return {}
    out = OutputFolder(folder).claim(["evolution.png", "evolution.gif"])
    buf = io.BytesIO()
    plot_evolution(frames, threshold).savefig(buf, format="png", dpi=110)
    return {
        "png": out.write("evolution.png", buf.getvalue()),
        "gif": out.write("evolution.gif", evolution_gif(frames, threshold)),
    }
