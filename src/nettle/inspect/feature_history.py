"""Feature maps of a fixed group of inputs, recorded while a run trains, and their evolution.

A run whose config has a `feature_history` section (`nettle.config.FeatureHistoryConfig`:
`layers`, `epochs`, `inputs`) records the outputs of those layers for the first `inputs`
examples of the test split after each chosen epoch (epoch 0: the initial weights, before the
first step) into `RUN/feature_history/`:

    inputs.pt        {"inputs": (N, C, H, W), "labels": (N,), "layers": [...]}
    epoch0003.pt     {"epoch": 3, "maps": {layer: (N, ...)}}

Tensors only, written atomically and read back with `torch.load(weights_only=True)`. The
recording runs in eval mode under `no_grad` on fixed inputs and consumes no random numbers, so
the trained weights are the same with or without it: the section is an execution setting
(`nettle.config.EXECUTION_KEYS`) and not part of the run id. It hooks into the trainer through
its `progress` callback (events "start" and "epoch"), on the main process only. An epoch whose
file exists already (a resumed run) is recorded again, replacing it. `nettle inspect RUN` draws
one strip per layer with `plot_feature_history`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nettle.config import ConfigError, ExperimentConfig
from nettle.files import atomic_open
from nettle.inspect.activations import capture, get_layers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FOLDER",
    "FeatureHistory",
    "FeatureRecorder",
    "check_feature_history",
    "load_feature_history",
    "plot_feature_history",
    "with_feature_history",
]

FOLDER = "feature_history"
Progress = Callable[[str, dict[str, Any]], None]
_EPOCH_FILE = re.compile(r"epoch(\d{4,})\.pt")


def check_feature_history(cfg: ExperimentConfig, model: nn.Module | None = None) -> None:
    """Refuse a `feature_history` section whose layers or epochs the run cannot record.

    Builds the model (unless given) to check the layer names; raises `ConfigError` naming the
    field. Nothing is checked when the section is absent.
    """
    fh = cfg.feature_history
    if fh is None:
        return
    late = [e for e in fh.epochs or [] if e > cfg.train.epochs]
    if late:
        raise ConfigError(
            f"feature_history.epochs: {late} after the last epoch; expected 0..{cfg.train.epochs}"
        )
    if model is None:
        from nettle.models.build import build_model

        model = build_model(cfg)
    try:
        get_layers(model, fh.layers)
    except ValueError as exc:
        raise ConfigError(f"feature_history.layers: {exc}") from None


class FeatureRecorder:
    """Records `layers` of `model` for fixed `inputs` into `folder` after chosen epochs."""

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        layers: Sequence[str],
        epochs: Sequence[int] | None,
        folder: str | Path,
    ) -> None:
        get_layers(model, layers)  # an unknown name is an error now, not after an epoch
        self.model, self.inputs, self.labels = model, inputs.detach().cpu(), labels.cpu()
        self.layers, self.folder = list(layers), Path(folder)
        self.epochs = None if epochs is None else set(epochs)

    def wants(self, epoch: int) -> bool:
        """Whether `epoch` (0: before training) is recorded."""
        return self.epochs is None or epoch in self.epochs

    def record(self, epoch: int) -> Path:
        """Capture the layers now and write `epochNNNN.pt`; its path."""
        self.folder.mkdir(exist_ok=True)
        inputs_file = self.folder / "inputs.pt"
        if not inputs_file.is_file():
            self._save(inputs_file, inputs=self.inputs, labels=self.labels, layers=self.layers)
        maps = capture(self.model, self.inputs, self.layers)
        path = self.folder / f"epoch{epoch:04d}.pt"
        self._save(path, epoch=epoch, maps=maps)
        return path

    @staticmethod
    def _save(path: Path, **data: Any) -> None:
        with atomic_open(path) as f:
            torch.save(data, f)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        """A trainer `progress` callback: "start" at step 0 records epoch 0, "epoch" its epoch."""
        if event == "start" and info.get("step") == 0 and self.wants(0):
            self.record(0)
        elif event == "epoch" and self.wants(int(info["epoch"])):
            self.record(int(info["epoch"]))


def with_feature_history(
    cfg: ExperimentConfig,
    run_dir: Path,
    model: nn.Module,
    test_data: Any,
    progress: Progress | None,
) -> Progress | None:
    """`progress`, preceded by a `FeatureRecorder` when `cfg.feature_history` is set (rank 0)."""
    from nettle.train.distributed import is_main_process

    fh = cfg.feature_history
    if fh is None or not is_main_process():
        return progress
    n = min(fh.inputs, len(test_data))
    xs, ys = zip(*(test_data[i] for i in range(n)))
    labels = [torch.as_tensor(v) for v in ys]  # a sequence label (CTC lines) is stored as -1
    y = torch.tensor([int(v) if v.numel() == 1 else -1 for v in labels])
    x = torch.stack(list(xs))
    recorder = FeatureRecorder(model, x, y, fh.layers, fh.epochs, run_dir / FOLDER)

    def both(event: str, info: dict[str, Any]) -> None:
        recorder(event, info)
        if progress is not None:
            progress(event, info)

    return both


@dataclass
class FeatureHistory:
    """Recorded feature maps: `maps[layer]` is (epochs, N, ...) in the order of `epochs`."""

    epochs: list[int]
    inputs: torch.Tensor
    labels: torch.Tensor
    maps: dict[str, torch.Tensor]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: one line naming it
        raise ValueError(f"{path}: not a feature history file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a feature history file (no mapping inside)")
    return data


def load_feature_history(run_dir: str | Path) -> FeatureHistory | None:
    """The history recorded in `run_dir`, or None if it has none; a bad file is one line."""
    folder = Path(run_dir) / FOLDER
    files = sorted(
        (int(m.group(1)), p)
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := _EPOCH_FILE.fullmatch(p.name))
    )
    if not files or not (folder / "inputs.pt").is_file():
        return None
    head = _load(folder / "inputs.pt")
    inputs, labels, layers = head.get("inputs"), head.get("labels"), head.get("layers")
    n = len(inputs) if isinstance(inputs, torch.Tensor) and inputs.dim() == 4 else -1
    if (
        n < 1
        or not isinstance(labels, torch.Tensor)
        or labels.shape != (n,)
        or not isinstance(layers, list)
        or not all(isinstance(name, str) for name in layers)
    ):
        raise ValueError(
            f"{folder / 'inputs.pt'}: not a feature history file (expected inputs (N, C, H, W), "
            "labels (N,) and a list of layer names)"
        )
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for _, path in files:
        maps = _load(path).get("maps")
        for name in layers:
            m = maps.get(name) if isinstance(maps, dict) else None
            if not isinstance(m, torch.Tensor) or m.dim() < 2 or len(m) != n:
                raise ValueError(f"{path}: no feature maps (N={n}, ...) of layer {name!r}")
            per_layer[name].append(m.float())
    try:
        stacked = {name: torch.stack(v) for name, v in per_layer.items()}
    except RuntimeError:
        raise ValueError(f"{folder}: feature maps of different shapes across epochs") from None
    return FeatureHistory([e for e, _ in files], inputs, labels, stacked)


def _strongest_channel(maps: torch.Tensor) -> int:
    """The channel with the largest mean activation over the inputs at the last epoch."""
    last = maps[-1]
    return int(last.flatten(2).mean((0, 2)).argmax()) if last.dim() > 2 else 0


def plot_feature_history(
    history: FeatureHistory, layer: str, channel: int | None = None, max_inputs: int = 8
) -> Figure:
    """One row per recorded epoch of one channel's map for each input (columns).

    The top row shows the inputs, labelled. `channel` defaults to the one most active at the
    last epoch; every map shares one colour scale, so growth over training shows. A layer with
    flat outputs (N, K) is drawn as one row of K values per input.
    """
    from matplotlib.figure import Figure

    from nettle.inspect.plots import _mosaic_row

    maps = history.maps[layer].float()
    n = min(max_inputs, maps.shape[1])
    spatial = maps.dim() > 3
    c = _strongest_channel(maps) if channel is None else channel
    if spatial and not 0 <= c < maps.shape[2]:
        raise ValueError(f"channel {c} of layer {layer!r} is outside 0..{maps.shape[2] - 1}")
    shown = maps[:, :n, c] if spatial else maps[:, :n, None, :]
    lo, hi = float(shown.min()), float(shown.max())
    inputs = history.inputs[:n].float().mean(1)  # grey: the channel mean
    rows = len(history.epochs) + 1
    height = [1.0] + [max(0.25, shown.shape[-2] / shown.shape[-1])] * len(history.epochs)
    fig = Figure(figsize=(1.1 * n + 1.6, 1.1 * sum(height) + 0.8), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False, height_ratios=height)[:, 0]
    labels = [f"label {int(v)}" if v >= 0 else "" for v in history.labels[:n]]
    _mosaic_row(axes[0], inputs, labels, cmap="gray")
    axes[0].set_ylabel("input")
    axes[0].xaxis.set_ticks_position("top")
    im = None
    for ax, epoch, row in zip(axes[1:], history.epochs, shown):
        aspect = "equal" if spatial else "auto"  # square pixels; a flat row fills its band
        im = _mosaic_row(ax, row, cmap="viridis", vmin=lo, vmax=hi, aspect=aspect)
        ax.set_ylabel(f"epoch {epoch}")
    fig.colorbar(im, ax=list(axes[1:]), shrink=0.8, label="activation")
    what = f"channel {c}" if spatial else f"{maps.shape[-1]} units"
    fig.suptitle(f"Feature maps of {layer} ({what}) over training")
    return fig
