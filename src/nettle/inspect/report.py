"""One inspection of a trained run: filters, top patches, feature visualisations, history,
attributions, weights, the interpolation plane and the feature maps recorded while training.

`inspect_run(run_dir, out_dir)` loads the run's model (`best.pt`, else `last.pt`) and a split
of its data set, and writes PNGs, an `index.html` (images embedded, so the file stands alone)
and an `index.md` (images linked by relative path) into `out_dir`. The image keys of
`InspectionFiles.images` are stable: `filters`, `top_patches_c{C}`, `featurevis_c{C}`,
`history`, and those of `nettle.inspect.report_sections`: `attributions`, `weights`,
`interpolation_grid`, `feature_history_{layer}`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from nettle.files import OutputFolder
from nettle.inspect.activations import (
    LayerStats,
    activation_stats,
    eval_mode,
    iter_batches,
    model_device,
    record_layers,
    run_recorded,
)
from nettle.inspect.featurevis import channel as channel_objective
from nettle.inspect.featurevis import render
from nettle.inspect.page import PAGES, write_pages
from nettle.inspect.plots import plot_filters, plot_history, plot_render, plot_top_patches
from nettle.inspect.probes import top_patches
from nettle.inspect.report_sections import draw_sections, plan_sections
from nettle.inspect.trace import FieldTracer, Rect, UntraceableError

__all__ = ["InspectionFiles", "default_layer", "inspect_run", "traceable_layers"]

log = logging.getLogger(__name__)

_STATS_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU)


@dataclass
class InspectionFiles:
    """What `inspect_run` wrote: the two index pages, the PNGs by key, and what it chose."""

    index_html: Path
    index_md: Path
    images: dict[str, Path]
    layer: str = ""
    channels: list[int] = field(default_factory=list)
    stats: list[LayerStats] = field(default_factory=list)


def _center_rect(tracer: FieldTracer, layer: str) -> Rect:
    spatial = tracer.output_shape(layer)[2:]
    return tracer.rect(layer, [n // 2 for n in spatial])


def traceable_layers(model: nn.Module, input_size: Sequence[int]) -> dict[str, Rect]:
    """2-D conv layers whose receptive field can be traced, with the field of the centre unit."""
    tracer = FieldTracer(model, input_size)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            try:
                out[name] = _center_rect(tracer, name)
            except UntraceableError as e:
                log.debug("layer %s is not traceable: %s", name, e)
    return out


def default_layer(model: nn.Module, input_size: Sequence[int]) -> str:
    """The last traceable conv layer whose centre unit sees less than the whole input."""
    h, w = input_size[-2:]
    fields = traceable_layers(model, input_size)
    smaller = [n for n, r in fields.items() if r.height * r.width < h * w]
    if not smaller:
        raise ValueError(
            "no conv layer has a traceable receptive field smaller than the input "
            f"{tuple(input_size)}; traceable conv layers: {', '.join(fields) or 'none'}"
        )
    return smaller[-1]


def _check_layer(model: nn.Module, layer: str, input_size: Sequence[int]) -> int:
    """The channel count of `layer`; a bad name or untraceable layer lists the valid ones."""
    try:
        tracer = FieldTracer(model, input_size)
        _center_rect(tracer, layer)
        return tracer.output_shape(layer)[1]
    except (UntraceableError, ValueError) as e:
        valid = ", ".join(traceable_layers(model, input_size)) or "none"
        raise ValueError(f"{e}; traceable conv layers: {valid}") from None


def _channel_means(
    model: nn.Module, data: Any, layer: str, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel: the mean activation over the data and the best example's spatial mean."""
    total, best, n = None, None, 0
    with eval_mode(model), torch.no_grad(), record_layers(model, [layer]) as rec:
        for x in iter_batches(data, batch_size):
            run_recorded(model, x.to(model_device(model)), rec)
            per_example = rec[layer].flatten(2).mean(2).float().cpu()
            total = per_example.sum(0) if total is None else total + per_example.sum(0)
            top = per_example.max(0).values
            best = top if best is None else torch.maximum(best, top)
            n += len(per_example)
    assert total is not None and best is not None
    return total / n, best


def _subset(data: Any, n: int | None) -> Any:
    if n is None or n >= len(data):
        return data
    if hasattr(data, "tensors"):
        return torch.utils.data.TensorDataset(*(t[:n] for t in data.tensors))
    return torch.utils.data.Subset(data, range(n))


def _save(fig: Figure, out: OutputFolder, name: str) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return out.write(name, buf.getvalue())


def _first_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _fmt(v: Any) -> Any:
    return f"{v:.4f}" if isinstance(v, float) else v


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None


def _history(path: Path) -> list[dict[str, Any]]:
    """The records of `metrics.jsonl` (none if it is missing); a bad line is named."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    records = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}: line {i} is not JSON ({exc})") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _output_names(
    first_conv: bool, channels: Sequence[int], featurevis: bool, history: bool
) -> list[str]:
    names = [*PAGES, "filters.png"] if first_conv else list(PAGES)
    for c in channels:
        names += [f"top_patches_c{c}.png"] + ([f"featurevis_c{c}.png"] if featurevis else [])
    return names + (["history.png"] if history else [])


def inspect_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    layer: str | None = None,
    channels: Sequence[int] | None = None,
    top: int = 9,
    featurevis: bool = False,
    steps: int = 512,
    split: str = "test",
    max_examples: int | None = None,
    seed: int = 0,
    cam_layer: str | None = None,
) -> InspectionFiles:
    """Inspect a trained run and write the PNGs and index pages into `out_dir`.

    Args:
        run_dir: a run dir with `config.yaml` and `checkpoints/`.
        out_dir: created if missing; files of the same names are replaced only if nettle wrote
            them (`nettle.files.OutputFolder`), and every name is checked before any write.
        layer: the layer whose channels are probed (default: `default_layer`).
        channels: its channels (default: the two with the highest mean activation).
        top: patches per channel.
        featurevis: also render each channel's feature visualisation (`steps` Adam steps).
        split: the data split searched for top patches ("train" or "test").
        max_examples: use only the first examples of the split.
        seed: the feature visualisation's seed.
        cam_layer: Grad-CAM's layer (default: the last `nn.Conv2d`).

    Raises:
        ValueError: an unknown or untraceable layer, a channel out of range (the message
            lists the valid names or the range), a bad count, or an output folder holding a
            file nettle did not write.
    """
    from nettle.config import load_config
    from nettle.models.build import load_run_model
    from nettle.train.data import create_dataset

    counts = {"top": top, "steps": steps, "max_examples": max_examples}
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    run_dir, out = Path(run_dir), OutputFolder(out_dir)
    out.check(PAGES)  # before any work: an output folder we may not write into
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config; is {run_dir} a run dir?")
    cfg = load_config(path)
    model = load_run_model(run_dir, cfg)
    d = cfg.data
    data = _subset(create_dataset(d.name, split, d.root, d.image_size), max_examples)
    input_size = tuple(data[0][0].shape)
    layer = layer or default_layer(model, input_size)
    n_channels = _check_layer(model, layer, input_size)
    means, best = _channel_means(model, data, layer)
    if channels is None:
        channels = means.argsort(descending=True)[:2].tolist()
    for c in channels:
        if not 0 <= c < n_channels:
            raise ValueError(f"channel {c} of layer {layer!r} is outside 0..{n_channels - 1}")
    records = _history(run_dir / "metrics.jsonl")
    summary = _read_json(run_dir / "summary.json")
    history = any(r.get("kind", "epoch") == "epoch" and "epoch" in r for r in records)
    first = _first_conv(model)
    with torch.no_grad():
        output_shape = tuple(model.eval()(data[0][0][None]).shape)
    sections = plan_sections(model, run_dir, cam_layer, output_shape)
    out.claim(_output_names(first is not None, channels, featurevis, history) + sections.names)
    images: dict[str, Path] = {}
    if first is not None:
        images["filters"] = _save(plot_filters(first[1], first[0]), out, "filters.png")
    for c in channels:
        found = top_patches(model, data, layer, c, k=top)
        images[f"top_patches_c{c}"] = _save(plot_top_patches(found), out, f"top_patches_c{c}.png")
        if featurevis:
            vis = render(model, channel_objective(layer, c), input_size, steps=steps, seed=seed)
            fig = plot_render(vis, reference=float(best[c]), title=f"{layer} channel {c}")
            images[f"featurevis_c{c}"] = _save(fig, out, f"featurevis_c{c}.png")
    if history:
        images["history"] = _save(plot_history(records), out, "history.png")
    images |= draw_sections(sections, model, data, layer, channels[0], out, _save)
    stat_layers = [n for n, m in model.named_modules() if isinstance(m, _STATS_TYPES)]
    stats = activation_stats(model, _subset(data, 2000), stat_layers, sample_size=100_000)
    summary = summary if isinstance(summary, dict) else {}
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    info = {
        "run": str(run_dir),
        "model": cfg.model.name,
        "data": f"{d.name} ({split}, {len(data)} examples)",
        "layer": layer,
        "channels": ", ".join(f"{c} (mean {float(means[c]):.3g})" for c in channels),
        "test accuracy": _fmt(final.get("test_acc")),
        "Grad-CAM layer": sections.cam_layer if "attributions" in images else None,
        **sections.notes,
    }
    html, md = write_pages(out, info, images, stats)
    return InspectionFiles(html, md, images, layer, list(channels), stats)
