"""The further sections of an inspection page: attributions, weights and biases, the model
over an interpolation plane, and the feature maps recorded while training.

`plan_sections` names the files before anything is written (so that `OutputFolder.claim`
checks them all at once); `draw_sections` draws them. Image keys: `attributions` (Grad-CAM,
saliency and integrated gradients of the first 8 examples; left out with a note when Captum
is not installed), `weights`, `interpolation_grid`, `feature_history_{layer}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from nettle.files import OutputFolder
from nettle.inspect.attributions import (
    grad_cam,
    integrated_gradients,
    plot_attributions,
    saliency,
)
from nettle.inspect.feature_history import (
    FeatureHistory,
    load_feature_history,
    plot_feature_history,
)
from nettle.inspect.interpolation import interpolate_grid, plot_interpolation_grid
from nettle.inspect.plots import plot_weights

__all__ = ["SectionPlan", "draw_sections", "last_conv", "plan_sections"]

ATTRIBUTION_INPUTS = 8


def _captum_missing() -> str | None:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return "not drawn: pip install 'nettle[attribution]' (Captum)"
    return None


def last_conv(model: nn.Module) -> str | None:
    """The name of the model's last `nn.Conv2d`, Grad-CAM's default layer."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return names[-1] if names else None


@dataclass
class SectionPlan:
    """What `draw_sections` will draw, and the files it will write."""

    cam_layer: str | None
    history: FeatureHistory | None
    notes: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


def plan_sections(
    model: nn.Module, run_dir: Path, cam_layer: str | None, output_shape: tuple[int, ...]
) -> SectionPlan:
    """Check the Grad-CAM layer and read the feature history (errors before any write).

    `output_shape` is the model's output for one input: attributions and the interpolation
    plane explain class scores, so they are drawn only for outputs of shape (1, classes).
    """
    from nettle.inspect.activations import get_layers

    if cam_layer is not None:
        get_layers(model, [cam_layer])
    plan = SectionPlan(cam_layer or last_conv(model), load_feature_history(run_dir))
    classifier = len(output_shape) == 2
    missing = _captum_missing()
    if not classifier:
        plan.notes["attributions"] = (
            f"not drawn: the model's outputs {tuple(output_shape)} are not class scores"
        )
    elif missing:
        plan.notes["attributions"] = missing
    elif plan.cam_layer is not None:
        plan.names.append("attributions.png")
    plan.names += ["weights.png"] + (["interpolation_grid.png"] if classifier else [])
    if plan.history is not None:
        plan.names += [f"feature_history_{n}.png" for n in plan.history.maps]
    return plan


def _distinct_labels(data: Any, n: int) -> list[int]:
    """Indices of the first `n` examples with distinct labels (fewer if there are not)."""
    seen: dict[int, int] = {}
    for i in range(min(len(data), 1000)):
        seen.setdefault(int(data[i][1]), i)
        if len(seen) == n:
            break
    return list(seen.values())


def draw_sections(
    plan: SectionPlan,
    model: nn.Module,
    data: Any,
    layer: str,
    channel: int,
    out: OutputFolder,
    save: Callable[[Figure, OutputFolder, str], Path],
) -> dict[str, Path]:
    """Draw what `plan` lists; the PNGs by key."""
    images: dict[str, Path] = {}
    if "attributions.png" in plan.names and plan.cam_layer is not None:
        x = torch.stack([data[i][0] for i in range(min(ATTRIBUTION_INPUTS, len(data)))])
        results = [
            grad_cam(model, x, plan.cam_layer),
            saliency(model, x),
            integrated_gradients(model, x),
        ]
        images["attributions"] = save(plot_attributions(results), out, "attributions.png")
    images["weights"] = save(plot_weights(model), out, "weights.png")
    corners = _distinct_labels(data, 3) if "interpolation_grid.png" in plan.names else []
    if len(corners) == 3:
        x, y, z = (data[i][0] for i in corners)
        grid = interpolate_grid(model, x, y, z, steps=11, layer=layer)
        fig = plot_interpolation_grid(grid, channel)
        images["interpolation_grid"] = save(fig, out, "interpolation_grid.png")
    if plan.history is not None:
        for name in plan.history.maps:
            fig = plot_feature_history(plan.history, name)
            images[f"feature_history_{name}"] = save(fig, out, f"feature_history_{name}.png")
    return images
