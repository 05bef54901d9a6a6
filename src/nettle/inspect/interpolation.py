"""Interpolation along two axes: the model over the plane through three inputs.

`interpolate_activation` (`nettle.inspect.probes`) follows one path x -> y; `interpolate_grid`
spans two: the inputs `x + a (y - x) + b (z - x)` for `a, b` on an even grid in [0, 1], so the
corners are x (0, 0), y (1, 0), z (0, 1) and y + z - x (1, 1). It records the model's outputs
over the grid and, optionally, one layer's activations: a localist unit changes in one patch
of the plane, a distributed code everywhere. `plot_interpolation_grid` draws the predicted
class and its probability over the plane, and a unit's activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from nettle.inspect.activations import eval_mode, model_device
from nettle.inspect.probes import layer_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["InterpolationGrid", "interpolate_grid", "plot_interpolation_grid"]


@dataclass
class InterpolationGrid:
    """The model over the plane through x, y and z.

    Attributes:
        alphas: the weights of y - x (S,), rows of the grid.
        betas: the weights of z - x (S,), columns of the grid.
        inputs: `x + alphas[i] (y - x) + betas[j] (z - x)` at `[i, j]` (S, S, C, H, W).
        outputs: the model's outputs (logits) (S, S, K).
        layer: the recorded layer ("" when none).
        activations: its outputs (S, S, ...), or None.
    """

    alphas: torch.Tensor
    betas: torch.Tensor
    inputs: torch.Tensor
    outputs: torch.Tensor
    layer: str = ""
    activations: torch.Tensor | None = None

    def unit(self, channel: int, reduce: str = "max") -> torch.Tensor:
        """One channel's activation over the grid (S, S), its map reduced by `max` or `mean`."""
        if self.activations is None:
            raise ValueError("no layer was recorded; pass layer= to interpolate_grid")
        if reduce not in ("max", "mean"):
            raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
        a = self.activations
        if not 0 <= channel < a.shape[2]:
            raise ValueError(f"channel {channel} of {self.layer!r} is outside 0..{a.shape[2] - 1}")
        a = a[:, :, channel]
        if a.dim() == 2:
            return a
        flat = a.flatten(2)
        return flat.amax(2) if reduce == "max" else flat.mean(2)


def interpolate_grid(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    steps: int = 11,
    layer: str | None = None,
) -> InterpolationGrid:
    """The model's outputs (and `layer`'s activations) on the S x S grid spanned by x, y, z."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    if not x.shape == y.shape == z.shape:
        shapes = ", ".join(str(tuple(t.shape)) for t in (x, y, z))
        raise ValueError(f"x, y and z must have one shape, got {shapes}")
    t = torch.linspace(0.0, 1.0, steps)
    ones = [1] * x.dim()
    a, b = t.view(steps, 1, *ones), t.view(1, steps, *ones)
    x, y, z = (v.detach().float().cpu() for v in (x, y, z))
    grid = x + a * (y - x) + b * (z - x)
    flat = grid.reshape(steps * steps, *x.shape)
    with eval_mode(model), torch.no_grad():
        out = model(flat.to(model_device(model))).float().cpu()
    acts = None
    if layer:
        acts = layer_output(model, layer, flat).float().cpu()
        acts = acts.reshape(steps, steps, *acts.shape[1:])
    return InterpolationGrid(
        t, t.clone(), grid, out.reshape(steps, steps, *out.shape[1:]), layer or "", acts
    )


def plot_interpolation_grid(
    grid: InterpolationGrid, channel: int | None = None, classes: list[str] | None = None
) -> Figure:
    """The corner inputs, the predicted class and its probability over the plane, and the
    activation of `channel` of the recorded layer (when given)."""
    from matplotlib.figure import Figure

    from nettle.inspect.plots import _show, fixed_margins

    probs = grid.outputs.softmax(-1)
    conf, pred = probs.max(-1)
    panels = 3 if channel is None else 4
    fig = Figure(figsize=(3.2 * panels, 3.6))
    fixed_margins(fig, top=0.75, left=0.5, bottom=0.6, wspace=0.45)
    axes = fig.subplots(1, panels)
    s = len(grid.alphas)
    corners = torch.cat(
        [
            torch.cat([grid.inputs[0, 0], grid.inputs[0, -1]], -1),
            torch.cat([grid.inputs[-1, 0], grid.inputs[-1, -1]], -1),
        ],
        -2,
    )
    _show(axes[0], corners, "x, z (top); y, y + z - x")
    extent = (0.0, 1.0, 1.0, 0.0)  # rows: alpha down; columns: beta right
    im = axes[1].imshow(pred.numpy(), cmap="tab10", vmin=-0.5, vmax=9.5, extent=extent)
    marks = sorted({0, s // 2, s - 1})  # the class written at corners, edges and centre
    for i in marks:
        for j in marks:
            label = classes[int(pred[i, j])] if classes else str(int(pred[i, j]))
            v = (float(grid.betas[j]), float(grid.alphas[i]))
            axes[1].text(*v, label, ha="center", va="center", fontsize=7, color="white")
    axes[1].set_title("predicted class", fontsize=9)
    im = axes[2].imshow(conf.numpy(), cmap="viridis", vmin=0, vmax=1, extent=extent)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    axes[2].set_title("its probability", fontsize=9)
    if channel is not None:
        im = axes[3].imshow(grid.unit(channel).numpy(), cmap="magma", extent=extent)
        fig.colorbar(im, ax=axes[3], shrink=0.8)
        axes[3].set_title(f"{grid.layer} channel {channel} (max)", fontsize=9)
    for ax in axes[1:]:
        ax.set_xlabel("beta (x -> z)")
        ax.set_ylabel("alpha (x -> y)")
    fig.suptitle("The model over the plane x + alpha (y - x) + beta (z - x)")
    return fig
