"""Figures for inspection: filters, feature maps, history, robustness, interpolation, probabilities,
top patches and feature visualisations.

Each function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
windows); save it with `fig.savefig(path)`. Images are (C, H, W) tensors: one channel is drawn
in grey, three as RGB, others as the channel mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import nn

from nettle.inspect.featurevis import FeatureVis
from nettle.inspect.probes import AugmentationEffect, Probabilities, TopPatches

__all__ = [
    "fixed_margins",
    "plot_accuracy_vs_eps",
    "plot_augmentation_effect",
    "plot_feature_maps",
    "plot_featurevis",
    "plot_filters",
    "plot_history",
    "plot_interpolation",
    "plot_probabilities",
    "plot_render",
    "plot_top_patches",
    "plot_weights",
]


def _grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _normalise(t: torch.Tensor) -> torch.Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.full_like(t, 0.5)


def _show(ax: Axes, img: torch.Tensor, title: str = "", **kw: Any) -> Any:
    img = img.detach().float().cpu()
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if img.dim() == 3 and img.shape[0] == 3:
        return ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    if img.dim() == 3:
        img = img.mean(0)
    kw.setdefault("cmap", "gray")
    if "vmin" not in kw and img.min() >= 0 and img.max() <= 1:  # an image in [0, 1]: as is
        kw.update(vmin=0.0, vmax=1.0)
    return ax.imshow(img.numpy(), interpolation="nearest", **kw)


def _mosaic(images: torch.Tensor, gap: int = 1) -> torch.Tensor:
    """Images (N, h, w) side by side in one (h, N w + (N - 1) gap) array, NaN between them.

    One `imshow` of a mosaic draws a row of small maps far faster than one axes per map.
    """
    n, h, w = images.shape
    out = torch.full((h, n * (w + gap) - gap), float("nan"))
    for i, img in enumerate(images.detach().float().cpu()):
        out[:, i * (w + gap) : i * (w + gap) + w] = img
    return out


def _mosaic_row(ax: Axes, images: torch.Tensor, labels: Sequence[str] = (), **kw: Any) -> Any:
    """Draw `_mosaic(images)` on `ax`, each image's label under its centre; the image."""
    n, _, w = images.shape
    ax.set_yticks([])
    ax.set_xticks([i * (w + 1) + (w - 1) / 2 for i in range(n)] if labels else [])
    if labels:
        ax.set_xticklabels(labels, fontsize=7)
        ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return ax.imshow(_mosaic(images).numpy(), interpolation="nearest", **kw)


def fixed_margins(
    fig: Figure,
    *,
    top: float,
    left: float,
    right: float = 0.1,
    bottom: float = 0.1,
    wspace: float = 0.15,
    hspace: float = 0.2,
) -> None:
    """Margins in inches (`top` for the suptitle, `left` for row labels) and gaps between
    axes (fractions of an axes), instead of the constrained layout engine, which costs two
    more draws than the figures it lays out."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace,
        hspace=hspace,
    )  # fmt: skip


def _images(
    images: Sequence[torch.Tensor], titles: Sequence[str], suptitle: str, max_cols: int = 8
) -> Figure:
    rows, cols = _grid(len(images), max_cols)
    fig = Figure(figsize=(1.3 * cols + 0.4, 1.4 * rows + 0.6))
    fixed_margins(fig, top=0.6, left=0.2, hspace=0.45)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, img, title in zip(axes, images, titles):
        _show(ax, img, title)
    for ax in axes[len(images) :]:
        ax.set_axis_off()
    fig.suptitle(suptitle)
    return fig


def plot_filters(conv: nn.Module | torch.Tensor, name: str = "", max_filters: int = 64) -> Figure:
    """A conv layer's filters as images, each normalised to [0, 1] on its own.

    Filters with 1 or 3 input channels are drawn as grey or RGB images; others as the mean over
    their input channels.
    """
    w = conv.weight if isinstance(conv, nn.Module) else conv
    w = w.detach().float().cpu()
    if w.dim() != 4:
        raise ValueError(f"expected conv weights (out, in, kh, kw), got shape {tuple(w.shape)}")
    shown = w[:max_filters]
    images = [_normalise(f if f.shape[0] in (1, 3) else f.mean(0, keepdim=True)) for f in shown]
    title = f"Filters of {name or 'the layer'}: {w.shape[0]} x {w.shape[1]} x "
    title += f"{w.shape[2]}x{w.shape[3]}"
    if len(shown) < len(w):
        title += f" (first {len(shown)})"
    return _images(images, [f"#{i}" for i in range(len(shown))], title)


def plot_weights(model: nn.Module, max_layers: int = 12, bins: int = 40) -> Figure:
    """Weights and biases of each conv and linear layer: a histogram of its weights beside its
    biases (a bar per output unit, or a histogram for more than 64), one row per layer."""
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor)
        and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ][:max_layers]
    if not layers:
        raise ValueError("the model has no conv or linear layer with weights")
    fig = Figure(figsize=(8.0, 1.6 * len(layers) + 0.6))
    fixed_margins(fig, top=0.55, left=0.9, right=0.15, bottom=0.45, wspace=0.25, hspace=0.75)
    axes = fig.subplots(len(layers), 2, squeeze=False)
    for (name, m), (ax_w, ax_b) in zip(layers, axes):
        w = m.weight.detach().float().cpu().flatten()
        ax_w.hist(w.numpy(), bins=bins, color="tab:blue")
        ax_w.set_ylabel(name, fontsize=8)
        ax_w.set_title(f"weights: {w.numel()}, mean {w.mean():.2g}, std {w.std():.2g}", fontsize=8)
        bias = getattr(m, "bias", None)
        if not isinstance(bias, torch.Tensor):
            ax_b.set_axis_off()
            ax_b.text(0.5, 0.5, "no bias", ha="center", va="center", transform=ax_b.transAxes)
            continue
        b = bias.detach().float().cpu()
        if len(b) <= 64:
            ax_b.bar(range(len(b)), b.numpy(), color="tab:orange")
            ax_b.set_xlabel("output unit", fontsize=8)
        else:
            ax_b.hist(b.numpy(), bins=bins, color="tab:orange")
        ax_b.set_title(f"biases: {len(b)}, mean {b.mean():.2g}", fontsize=8)
    fig.suptitle("Weights and biases per layer")
    return fig


def plot_feature_maps(maps: torch.Tensor, name: str = "", max_maps: int = 32) -> Figure:
    """The channels of one feature map (C, h, w) on one colour scale, with a colour bar."""
    maps = maps.detach().float().cpu()
    if maps.dim() != 3:
        raise ValueError(f"expected feature maps (C, h, w), got shape {tuple(maps.shape)}")
    shown = maps[:max_maps]
    rows, cols = _grid(len(shown))
    fig = Figure(figsize=(1.3 * cols + 1.2, 1.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    lo, hi = float(shown.min()), float(shown.max())
    im = None
    for i, (ax, m) in enumerate(zip(axes, shown)):
        im = _show(ax, m, f"ch {i}", cmap="viridis", vmin=lo, vmax=hi)
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="activation")
    fig.suptitle(f"Feature maps of {name or 'the layer'}: {tuple(maps.shape)}")
    return fig


def plot_augmentation_effect(
    effect: AugmentationEffect, image: torch.Tensor, name: str = "", channels: int = 4
) -> Figure:
    """Input and augmented input, then the most changed channels: before, after, difference."""
    change = effect.difference.flatten(1).norm(dim=1)
    top = change.argsort(descending=True)[:channels].tolist()
    fig = Figure(figsize=(2.0 * (1 + len(top)), 6.0), layout="constrained")
    axes = fig.subplots(3, 1 + len(top), squeeze=False)
    _show(axes[0][0], image, "input")
    _show(axes[1][0], effect.augmented, "augmented")
    axes[2][0].set_axis_off()
    for j, c in enumerate(top, start=1):
        lo = float(min(effect.before[c].min(), effect.after[c].min()))
        hi = float(max(effect.before[c].max(), effect.after[c].max()))
        _show(axes[0][j], effect.before[c], f"ch {c} before", cmap="viridis", vmin=lo, vmax=hi)
        _show(axes[1][j], effect.after[c], f"ch {c} after", cmap="viridis", vmin=lo, vmax=hi)
        d = float(effect.difference[c].abs().max()) or 1.0
        diff = effect.difference[c]
        im = _show(axes[2][j], diff, f"ch {c} difference", cmap="RdBu_r", vmin=-d, vmax=d)
        fig.colorbar(im, ax=axes[2][j], shrink=0.8)
    fig.suptitle(
        f"Augmentation effect on {name or 'the layer'} "
        f"(relative change {effect.relative_change:.2f})"
    )
    return fig


def plot_history(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Loss, accuracy and learning rate per epoch on a shared x axis (metrics.jsonl records)."""
    rows = [r for r in records if r.get("kind", "epoch") == "epoch" and "epoch" in r]
    if not rows:
        raise ValueError("no epoch records (dicts with an 'epoch' key) to plot")
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(6.4, 7.0), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(3, 1, sharex=True)
    panels = [(ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")]
    for ax, key, label in panels:
        for split, style in (("train", "-o"), ("test", "-s")):
            pts = [(e, r[f"{split}_{key}"]) for e, r in zip(epochs, rows) if f"{split}_{key}" in r]
            if pts:
                ax.plot(*zip(*pts), style, markersize=3, label=split)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    lr = [(e, r["lr"]) for e, r in zip(epochs, rows) if "lr" in r]
    if lr:
        ax_lr.plot(*zip(*lr), "-o", markersize=3, color="tab:purple")
        if min(v for _, v in lr) > 0 and max(v for _, v in lr) / min(v for _, v in lr) > 20:
            ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_lr.grid(True, alpha=0.3)
    fig.suptitle("Training history")
    return fig


def plot_accuracy_vs_eps(
    curves: Mapping[str, Sequence[tuple[float, float]] | Mapping[float, float]],
    clean: float | None = None,
    norm: str = "",
) -> Figure:
    """Robust accuracy against epsilon, one line per attack (accuracies in [0, 1]).

    `curves[attack]` is a list of `(eps, accuracy)` or a dict `{eps: accuracy}`, as in
    `RobustnessResult.accuracy`; `norm` ("Linf", "L2") names the perturbation's norm on the
    x axis. Epsilons are on the input scale (pixels in [0, 1]).
    """
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for attack, curve in curves.items():
        pts = sorted(curve.items() if isinstance(curve, Mapping) else curve)
        ax.plot([e for e, _ in pts], [a for _, a in pts], "-o", markersize=4, label=attack)
    if clean is not None:
        ax.axhline(clean, color="0.5", linestyle="--", label=f"clean {clean:.3f}")
    ax.set_xlabel(f"epsilon{' (' + norm + ')' if norm else ''}, pixels in [0, 1]")
    ax.set_ylabel("accuracy under attack (fraction)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy vs epsilon")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_interpolation(
    alphas: torch.Tensor, values: torch.Tensor, unit: str = "unit", name: str = ""
) -> Figure:
    """Activation along the path x0 -> x1 (one line, or one per unit for (steps, U) values)."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    a, v = alphas.cpu().numpy(), values.detach().float().cpu()
    if v.dim() == 1:
        ax.plot(a, v.numpy(), "-o", markersize=3, label=unit)
    else:
        for u in range(v.shape[1]):
            ax.plot(
                a, v[:, u].numpy(), linewidth=1, label=f"{unit} {u}" if v.shape[1] <= 10 else None
            )
    ax.set_xlabel("alpha (0: x0, 1: x1)")
    ax.set_ylabel("activation")
    ax.set_title(f"Activation of {name + ' ' if name else ''}{unit} along x0 -> x1")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_probabilities(probs: Probabilities, bins: int = 20, title: str = "") -> Figure:
    """Histograms of the top predicted probability (split by correct/wrong) and of all classes."""
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax_top, ax_all = fig.subplots(1, 2)
    conf = probs.confidence.numpy()
    edges = [i / bins for i in range(bins + 1)]
    if probs.correct is not None:
        ok = probs.correct.numpy()
        labels = [f"correct ({int(ok.sum())})", f"wrong ({int((~ok).sum())})"]
        colours = ["tab:green", "tab:red"]
        ax_top.hist([conf[ok], conf[~ok]], bins=edges, stacked=True, label=labels, color=colours)
        ax_top.legend(fontsize=8)
    else:
        ax_top.hist(conf, bins=edges)
    ax_top.set_xlabel("top predicted probability")
    ax_top.set_ylabel("examples")
    ax_top.set_title("Confidence")
    ax_all.hist(probs.probs.flatten().numpy(), bins=edges, color="tab:gray")
    ax_all.set_yscale("log")
    ax_all.set_ylim(bottom=0.8)  # bars start from one example
    ax_all.set_xlabel("predicted probability (all classes)")
    ax_all.set_ylabel("count")
    ax_all.set_title("All probabilities")
    fig.suptitle(title or f"Predicted probabilities of {len(conf)} examples")
    return fig


def plot_top_patches(result: TopPatches, max_cols: int = 8) -> Figure:
    """The top inputs with the receptive field outlined, each above the patch cut from it.

    Inputs are titled `#index: activation`; patches `height x width at (top, left)`. More than
    `max_cols` inputs wrap onto further row pairs.
    """
    n = len(result.indices)
    blocks = math.ceil(n / max_cols)
    cols = math.ceil(n / blocks)  # balanced rows: 9 inputs as 5 + 4, not 8 + 1

    def aspect(h: int, w: int) -> float:  # row height per unit of width, for wide images
        return min(1.0, max(0.2, h / max(w, 1)))

    r_in = aspect(*result.images[0].shape[-2:])
    r_patch = max(aspect(r.height, r.width) for r in result.rects)
    height = blocks * (1.4 * (r_in + r_patch) + 0.7) + 0.5
    fig = Figure(figsize=(1.5 * cols + 0.6, height))
    fixed_margins(fig, top=0.5, left=0.45, hspace=0.5)
    axes = fig.subplots(2 * blocks, cols, squeeze=False, height_ratios=[r_in, r_patch] * blocks)
    for j in range(blocks * cols):
        top, bottom = axes[2 * (j // cols)][j % cols], axes[2 * (j // cols) + 1][j % cols]
        if j >= n:
            top.set_axis_off()
            bottom.set_axis_off()
            continue
        img, r = result.images[j], result.rects[j]
        _show(top, img, f"#{result.indices[j]}: {result.values[j]:.3g}")
        box = Rectangle((r.left - 0.5, r.top - 0.5), r.width, r.height, fill=False, color="red")
        box.set(linewidth=2, clip_on=False)
        top.add_patch(box)
        _show(bottom, result.patches[j], f"{r.height}x{r.width} at ({r.top},{r.left})")
    for b in range(blocks):
        axes[2 * b][0].set_ylabel("input")
        axes[2 * b + 1][0].set_ylabel("patch")
    fig.suptitle(
        f"Top {n} inputs of {result.layer} channel {result.channel} "
        "(title: example #: max activation; red: receptive field)"
    )
    return fig


def plot_featurevis(results: Sequence[FeatureVis], max_cols: int = 6) -> Figure:
    """Rendered images titled with their objectives and final values."""
    titles = [f"{r.objective}\n{r.value:.2f}" for r in results]
    return _images([r.image for r in results], titles, "Feature visualisation", max_cols)


def plot_render(vis: FeatureVis, reference: float | None = None, title: str = "") -> Figure:
    """One feature visualisation beside its objective per optimisation step.

    `reference` (say, the best data set example's value of the same objective) is drawn as a
    dashed line to compare with.
    """
    fig = Figure(figsize=(8.0, 3.4), layout="constrained")
    ax_img, ax_curve = fig.subplots(1, 2, width_ratios=[1, 1.6])
    _show(ax_img, vis.image, f"final objective {vis.value:.3g}")
    ax_curve.plot(range(1, len(vis.curve) + 1), vis.curve, color="tab:blue", label="objective")
    if reference is not None:
        label = f"best data example {reference:.3g}"
        ax_curve.axhline(reference, color="tab:red", linestyle="--", label=label)
    ax_curve.set_xlabel("optimisation step")
    ax_curve.set_ylabel("objective (transformed image)")
    ax_curve.grid(True, alpha=0.3)
    ax_curve.legend(fontsize=8)
    fig.suptitle(f"Feature visualisation: {title or vis.objective}")
    return fig
