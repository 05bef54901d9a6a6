"""Input attributions through Captum: saliency, integrated gradients and Grad-CAM.

- **Saliency** (Simonyan, Vedaldi and Zisserman 2014, "Deep Inside Convolutional Networks"):
  the absolute gradient of the target logit with respect to the input.
- **Integrated gradients** (Sundararajan, Taly and Yan 2017, "Axiomatic Attribution for Deep
  Networks"): the gradient averaged along the straight path from a baseline (default: all
  zeros, a blank digit) to the input, times the input minus the baseline. *Completeness*: the
  attributions sum to the target logit at the input minus that at the baseline; Captum's
  convergence delta is the gap, returned per example. 50 Gauss-Legendre steps is Captum's
  default.
- **Grad-CAM** (Selvaraju et al. 2017): the map of a conv layer's channels weighted by their
  spatially averaged gradients of the target logit, summed over channels and passed through a
  ReLU; upsampled bilinearly to the input size (Captum's `LayerGradCam` and
  `LayerAttribution.interpolate`).

Targets are logits (before any softmax), one class per example: by default the predicted one.
Inputs are (N, C, H, W) tensors on any device; the model is put in eval mode and every module's
own mode is restored after; its parameters' `.grad` are left as they were. Captum is the
optional extra `attribution`; a missing Captum is one `ImportError` naming the extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from nettle.inspect.activations import eval_mode, get_layers, model_device

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "METHODS",
    "Attribution",
    "attribute",
    "grad_cam",
    "integrated_gradients",
    "plot_attributions",
    "saliency",
]

METHODS = ("saliency", "integrated_gradients", "grad_cam")


def _captum_attr():
    """The `captum.attr` module, or one `ImportError` naming the extra to install."""
    try:
        import captum.attr
    except ImportError:
        raise ImportError("attributions need Captum: pip install 'nettle[attribution]'") from None
    return captum.attr


@dataclass
class Attribution:
    """Attribution maps of a batch of inputs for their target classes.

    Attributes:
        method: "saliency", "integrated_gradients" or "grad_cam".
        inputs: the inputs (N, C, H, W), on the CPU.
        targets: the class attributed for each input (N,).
        maps: attributions (N, C, H, W) for saliency and integrated gradients; Grad-CAM's
            upsampled map (N, 1, H, W).
        layer: Grad-CAM's layer ("" otherwise).
        layer_maps: Grad-CAM at the layer's own resolution (N, 1, h, w), or None.
        delta: integrated gradients' completeness gap per input (sum of attributions minus
            the logit difference between input and baseline), or None.
    """

    method: str
    inputs: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    layer: str = ""
    layer_maps: torch.Tensor | None = None
    delta: torch.Tensor | None = None

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.maps.shape))
        where = f", layer={self.layer!r}" if self.layer else ""
        return f"Attribution({self.method}{where}, maps={shape})"


def _targets(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | None) -> torch.Tensor:
    """One class per input: as given (an int for all), or the model's prediction."""
    if target is None:
        with torch.no_grad():
            return model(x).argmax(1)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).flatten()
    if len(t) == 1:
        t = t.expand(len(x))
    if len(t) != len(x):
        raise ValueError(f"{len(t)} targets for {len(x)} inputs; give one per input or one int")
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    if int(t.min()) < 0 or int(t.max()) >= classes:
        raise ValueError(f"targets must be classes 0..{classes - 1}, got {t.tolist()}")
    return t


class _KeepGrads:
    """Restore the parameters' `.grad` after Captum's backward passes have filled them."""

    def __init__(self, model: nn.Module) -> None:
        self.saved = [(p, p.grad) for p in model.parameters()]

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        for p, g in self.saved:
            p.grad = g


def _prepare(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be a batch (N, C, H, W), got shape {tuple(inputs.shape)}")
    return inputs.detach().float().to(model_device(model))


def saliency(
    model: nn.Module, inputs: torch.Tensor, target: int | Sequence[int] | None = None
) -> Attribution:
    """|d logit_target / d input| for each input (Simonyan et al. 2014)."""
    attr = _captum_attr()
    x = _prepare(model, inputs)
    with eval_mode(model), _KeepGrads(model):
        t = _targets(model, x, target)
        maps = attr.Saliency(model).attribute(x.clone().requires_grad_(True), target=t)
    return Attribution("saliency", x.cpu(), t.cpu(), maps.detach().cpu())


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | None = None,
    baseline: torch.Tensor | float = 0.0,
    steps: int = 50,
) -> Attribution:
    """Integrated gradients from `baseline` (a tensor like one input, or a constant).

    `delta` holds the completeness gap per input; raise `steps` if it is large compared with
    the logit difference.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    attr = _captum_attr()
    x = _prepare(model, inputs)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    base = base.expand_as(x).contiguous() if base.dim() in (0, 3, 4) else None
    if base is None:
        raise ValueError("baseline must be a number, one input (C, H, W) or a batch like inputs")
    with eval_mode(model), _KeepGrads(model):
        t = _targets(model, x, target)
        ig = attr.IntegratedGradients(model)
        maps, delta = ig.attribute(
            x, baselines=base, target=t, n_steps=steps, return_convergence_delta=True
        )
    return Attribution(
        "integrated_gradients", x.cpu(), t.cpu(), maps.detach().cpu(), delta=delta.detach().cpu()
    )


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    target: int | Sequence[int] | None = None,
) -> Attribution:
    """Grad-CAM of a conv layer's output (Selvaraju et al. 2017), upsampled to the input.

    `layer_maps` is ReLU(sum_c mean_ij(d logit / d A_cij) * A_c) at the layer's resolution
    (N, 1, h, w); `maps` is it resized bilinearly to the input's (H, W), still non-negative.
    """
    attr = _captum_attr()
    module = get_layers(model, [layer])[layer]
    x = _prepare(model, inputs)
    with eval_mode(model), _KeepGrads(model):
        t = _targets(model, x, target)
        cam = attr.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
    if cam.dim() != 4:
        raise ValueError(
            f"Grad-CAM needs a layer with (N, C, h, w) outputs; {layer!r} gives {cam.dim()} dims"
        )
    up = attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return Attribution(
        "grad_cam", x.cpu(), t.cpu(), up.detach().cpu(), layer, layer_maps=cam.detach().cpu()
    )


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str,
    target: int | Sequence[int] | None = None,
    layer: str | None = None,
) -> Attribution:
    """One of `METHODS` by name (`layer` is required for Grad-CAM and refused otherwise)."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
    if method == "grad_cam":
        if not layer:
            raise ValueError("grad_cam needs a layer, e.g. the last conv layer")
        return grad_cam(model, inputs, layer, target)
    if layer:
        raise ValueError(f"{method} attributes to the input; a layer is for grad_cam only")
    fn = saliency if method == "saliency" else integrated_gradients
    return fn(model, inputs, target)


_TITLES = {
    "saliency": "saliency |grad|",
    "integrated_gradients": "integrated gradients",
    "grad_cam": "Grad-CAM",
}


def plot_attributions(results: Sequence[Attribution], max_inputs: int = 8) -> Figure:
    """The inputs (labelled with their target class), then one row per attribution method.

    Grad-CAM is drawn over the inputs (jet, half transparent); saliency as a heat map and
    integrated gradients on a diverging scale symmetric about 0 (red: for the class, blue:
    against), each map scaled to its own largest magnitude. Maps are summed over channels.
    """
    from matplotlib.figure import Figure

    from nettle.inspect.plots import _mosaic_row

    if not results:
        raise ValueError("no attributions to plot")
    first = results[0]
    n = min(max_inputs, len(first.inputs))
    grey = first.inputs[:n].float().mean(1)
    fig = Figure(figsize=(1.1 * n + 1.2, 1.25 * (1 + len(results)) + 0.6), layout="constrained")
    axes = fig.subplots(1 + len(results), 1, squeeze=False)[:, 0]
    _mosaic_row(axes[0], grey, [f"target {int(t)}" for t in first.targets[:n]], cmap="gray")
    axes[0].xaxis.set_ticks_position("top")
    axes[0].set_ylabel("input")
    for ax, res in zip(axes[1:], results):
        m = res.maps[:n].float().sum(1)
        scale = m.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1)
        if res.method == "grad_cam":
            _mosaic_row(ax, res.inputs[:n].float().mean(1), cmap="gray")
            _mosaic_row(ax, m / scale, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        elif res.method == "integrated_gradients":
            _mosaic_row(ax, m / scale, cmap="RdBu_r", vmin=-1, vmax=1)
        else:
            _mosaic_row(ax, m / scale, cmap="hot", vmin=0, vmax=1)
        ax.set_ylabel(_TITLES[res.method] + (f"\n{res.layer}" if res.layer else ""), fontsize=8)
    fig.suptitle("Attributions of the target logit")
    return fig
