"""An interactive feature-map viewer for notebooks: choose a layer, a channel and an input.

`FeatureMapViewer` captures the chosen layers' outputs for a few inputs once; `draw(layer,
channel, index)` redraws its matplotlib figure (the input beside the channel's map) and is the
callback of the widgets; `widget()` builds them with ipywidgets (the optional extra
`notebooks`), showing the figure as a PNG so that it needs no interactive matplotlib backend.

Example (in a notebook):
    >>> viewer = FeatureMapViewer(model, x[:8], ["stem.2", "stage1.2"])  # doctest: +SKIP
    >>> viewer.widget()  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from nettle.inspect.activations import capture

__all__ = ["FeatureMapViewer"]


class FeatureMapViewer:
    """Feature maps of `layers` for `inputs` (N, C, H, W), redrawn on demand.

    Args:
        model: the network (its modes are restored after the one capture).
        inputs: the inputs to show.
        layers: layer names as in `model.named_modules()`, whose outputs are (N, C, h, w)
            or (N, K) (drawn as one row).
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, layers: Sequence[str]) -> None:
        if not layers:
            raise ValueError("give at least one layer to view")
        self.inputs = inputs.detach().float().cpu()
        self.maps = capture(model, self.inputs, list(layers))
        self.layers = list(layers)
        self.figure = Figure(figsize=(6.0, 3.0), layout="constrained")
        self._ax_input, self._ax_map = self.figure.subplots(1, 2)
        self._colorbar: Any = None
        self.state: tuple[str, int, int] | None = None

    def channels(self, layer: str) -> int:
        """The number of channels (or units) of `layer`."""
        self._check_layer(layer)
        m = self.maps[layer]
        return m.shape[1] if m.dim() > 2 else 1

    def _check_layer(self, layer: str) -> None:
        if layer not in self.maps:
            raise ValueError(f"layer {layer!r} is not viewed; viewed: {', '.join(self.layers)}")

    def draw(self, layer: str, channel: int = 0, index: int = 0) -> Figure:
        """Redraw the figure for `(layer, channel, index)`; returns it."""
        from nettle.inspect.plots import _show

        n = self.channels(layer)
        if not 0 <= channel < n:
            raise ValueError(f"channel {channel} of layer {layer!r} is outside 0..{n - 1}")
        if not 0 <= index < len(self.inputs):
            raise ValueError(f"input {index} is outside 0..{len(self.inputs) - 1}")
        m = self.maps[layer][index]
        m = m[channel] if m.dim() > 1 else m[None]
        if self._colorbar is not None:  # before its image goes with the axes' contents
            self._colorbar.remove()
        for ax in (self._ax_input, self._ax_map):
            ax.clear()
        _show(self._ax_input, self.inputs[index], f"input {index}")
        what = f"channel {channel}" if self.maps[layer].dim() > 2 else "units"
        im = _show(self._ax_map, m, f"{layer} {what}", cmap="viridis")
        self._ax_map.set_aspect("equal" if m.dim() == 2 and m.shape[0] > 1 else "auto")
        self._colorbar = self.figure.colorbar(im, ax=self._ax_map, shrink=0.8)
        self.state = (layer, channel, index)
        return self.figure

    def png(self) -> bytes:
        """The current figure as PNG bytes."""
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=90)
        return buf.getvalue()

    def widget(self) -> Any:
        """A layer menu, channel and input sliders and the figure, as an ipywidgets box."""
        try:
            import ipywidgets as w
        except ImportError:
            raise ImportError(
                "the viewer needs ipywidgets: pip install 'nettle[notebooks]'"
            ) from None
        layer = w.Dropdown(options=self.layers, value=self.layers[0], description="layer")
        channel = w.IntSlider(0, 0, self.channels(self.layers[0]) - 1, description="channel")
        index = w.IntSlider(0, 0, len(self.inputs) - 1, description="input")
        image = w.Image(format="png")

        def redraw(_: Any = None) -> None:
            channel.max = self.channels(layer.value) - 1  # clamps the value too
            self.draw(layer.value, channel.value, index.value)
            image.value = self.png()

        for control in (layer, channel, index):
            control.observe(redraw, names="value")
        redraw()
        box = w.VBox([w.HBox([layer, channel, index]), image])
        box.controls = {"layer": layer, "channel": channel, "input": index, "image": image}
        return box
