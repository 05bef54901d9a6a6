"""Activations of named layers over a data set: capture, statistics, top-k inputs.

Forward hooks only (the model is not edited; hooks are always removed), eval mode and no_grad
(the model's mode is restored). Layers are named as in `model.named_modules()`; an unknown name
is an error that suggests the closest names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LayerStats", "TopK", "activation_stats", "capture", "top_k"]


def _modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    table = dict(model.named_modules())
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, [n for n in table if n], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"no layer named {name!r} in the model{hint}")
    return {n: table[n] for n in names}


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _batches(data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
        return
    if isinstance(data, tuple):
        yield from _batches(data[0], batch_size)
        return
    if hasattr(data, "tensors"):
        yield from _batches(data.tensors[0], batch_size)
        return
    from torch.utils.data import DataLoader

    for batch in DataLoader(data, batch_size=batch_size):
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


@contextmanager
def _recording(model: nn.Module, layers: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in _modules(model, list(layers)).items():

        def hook(m, i, o, name=name):
            out[name] = o.detach()

        handles.append(module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield out
    finally:
        for h in handles:
            h.remove()
        model.train(was)


def capture(
    model: nn.Module,
    data: Any,
    layers: Sequence[str],
    batch_size: int = 256,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of `layers` over `data` (tensors, (x, y), or a dataset), concatenated, on CPU."""
    device = _device(model)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with _recording(model, layers) as rec:
        for b, x in enumerate(_batches(data, batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            model(x.to(device))
            for n in layers:
                parts[n].append(rec[n].cpu())
    return {n: torch.cat(v) for n, v in parts.items()}


@dataclass
class LayerStats:
    """Statistics of one layer's activations over a data set."""

    name: str
    shape: list[int]
    mean: float
    std: float
    zero_fraction: float
    min: float
    max: float
    percentiles: dict[int, float]


def activation_stats(
    model: nn.Module,
    data: Any,
    layers: Sequence[str],
    batch_size: int = 256,
    percentiles: Sequence[int] = (1, 5, 25, 50, 75, 95, 99),
) -> list[LayerStats]:
    """Mean, std, fraction exactly zero, min, max and percentiles per layer."""
    acts = capture(model, data, layers, batch_size)
    out = []
    for name, a in acts.items():
        flat = a.flatten().float()
        sample = (
            flat if flat.numel() <= 1_000_000 else flat[torch.randperm(flat.numel())[:1_000_000]]
        )
        q = torch.quantile(sample, torch.tensor([p / 100 for p in percentiles]))
        out.append(
            LayerStats(
                name,
                list(a.shape[1:]),
                float(flat.mean()),
                float(flat.std()),
                float((flat == 0).float().mean()),
                float(flat.min()),
                float(flat.max()),
                {p: float(v) for p, v in zip(percentiles, q)},
            )
        )
    return out


@dataclass
class TopK:
    """The k inputs (indices into the data) that excite a unit most, with the activations."""

    indices: list[int]
    values: list[float]
    positions: list[tuple[int, ...]]


def top_k(
    model: nn.Module,
    data: Any,
    layer: str,
    channel: int,
    k: int = 9,
    neuron: tuple[int, ...] | None = None,
    reduce: str = "max",
    batch_size: int = 256,
) -> TopK:
    """Top-k inputs for a channel (max or mean over space) or for one neuron (channel, y, x).

    Streams over the data keeping only the running top k; `positions` give, per input, where in
    the feature map the maximum was (empty for `mean` and for single neurons).
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    device = _device(model)
    best_v = torch.empty(0)
    best_i = torch.empty(0, dtype=torch.long)
    best_p = torch.empty(0, dtype=torch.long)
    offset = 0
    with _recording(model, [layer]) as rec:
        for x in _batches(data, batch_size):
            model(x.to(device))
            a = rec[layer][:, channel].cpu()  # (N, *spatial)
            if neuron is not None:
                v, p = a[(slice(None), *neuron)], torch.zeros(len(a), dtype=torch.long)
            elif reduce == "mean" or a.dim() == 1:
                v, p = (
                    a.flatten(1).mean(1) if a.dim() > 1 else a,
                    torch.zeros(len(a), dtype=torch.long),
                )
            else:
                v, p = a.flatten(1).max(1)
            idx = torch.arange(offset, offset + len(a))
            offset += len(a)
            vals, order = torch.cat([best_v, v]).sort(descending=True, stable=True)
            keep = order[:k]
            best_v = vals[:k]
            best_i = torch.cat([best_i, idx])[keep]
            best_p = torch.cat([best_p, p])[keep]
            spatial = a.shape[1:]
    positions = []
    if neuron is None and reduce == "max" and len(spatial):
        positions = [
            tuple(int(c) for c in torch.unravel_index(torch.tensor(int(p)), spatial))
            for p in best_p
        ]
    return TopK(best_i.tolist(), best_v.tolist(), positions)
