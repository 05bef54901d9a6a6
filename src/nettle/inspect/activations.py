"""Activations of named layers over a data set: capture, statistics, top-k inputs.

Forward hooks only: the model is not edited, hooks are always removed, the forward runs in eval
mode under `no_grad` and every module's mode is restored afterwards. Layers are named as in
`model.named_modules()`; an unknown name is an error that suggests the closest names. A layer's
output is recorded at its first call in a forward pass (a module used twice, such as a shared
ReLU, is seen at its first use); the forward stops as soon as all requested layers have been
recorded, so later in-place operations cannot alter what was recorded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nettle.nn.modes import eval_mode, model_device

__all__ = [
    "LayerStats",
    "TopK",
    "activation_stats",
    "capture",
    "eval_mode",
    "get_layers",
    "iter_batches",
    "model_device",
    "record_layers",
    "run_recorded",
    "top_k",
]


def get_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Modules by qualified name; an unknown name raises `ValueError` listing similar names."""
    table = dict(model.named_modules())
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, [n for n in table if n], n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"no layer named {name!r} in the model{hint}")
    return {n: table[n] for n in names}


def iter_batches(data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Input batches of a tensor, an `(x, y)` tuple, a `TensorDataset`, a dataset or a loader."""
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
        return
    if isinstance(data, tuple):
        yield from iter_batches(data[0], batch_size)
        return
    if hasattr(data, "tensors"):
        yield from iter_batches(data.tensors[0], batch_size)
        return
    from torch.utils.data import DataLoader

    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    for batch in loader:
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


class _Recorded(Exception):
    """Raised by a hook to end the forward once every requested layer has been recorded."""


class _Record(dict):
    """Layer name -> recorded output, knowing which layers it waits for."""

    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        self.layers = list(layers)


@contextmanager
def record_layers(
    model: nn.Module, layers: Sequence[str], detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks that fill the yielded dict with the layers' outputs (removed on exit).

    Run forwards inside with `run_recorded(model, x, out)`: it stops as soon as every layer
    has been recorded. `detach=False` keeps the autograd graph (and does not copy).
    """
    out = _Record(layers)
    wanted = set(layers)
    handles = []
    for name, module in get_layers(model, list(layers)).items():

        def hook(m, i, o, name=name):
            if name not in out:
                out[name] = o.detach().clone() if detach else o
            if wanted.issubset(out):
                raise _Recorded

        handles.append(module.register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def run_recorded(model: nn.Module, x: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    """Run `model(x)` with `record_layers` hooks in place, stopping once all are recorded."""
    out.clear()
    try:
        model(x)
    except _Recorded:
        return
    missing = [n for n in getattr(out, "layers", ()) if n not in out]
    if missing:
        raise ValueError(f"layer {missing[0]!r} was not called in the forward pass")


def capture(
    model: nn.Module,
    data: Any,
    layers: Sequence[str],
    max_batches: int | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Outputs of `layers` over `data` (tensor, `(x, y)`, or dataset), concatenated on CPU."""
    device = model_device(model)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with eval_mode(model), torch.no_grad(), record_layers(model, layers) as rec:
        for b, x in enumerate(iter_batches(data, batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            run_recorded(model, x.to(device), rec)
            for n in layers:
                parts[n].append(rec[n].cpu())
    return {n: torch.cat(v) for n, v in parts.items()}


@dataclass
class LayerStats:
    """Statistics of one layer's activations over a data set (percentiles from a sample)."""

    name: str
    shape: list[int]
    count: int
    mean: float
    std: float
    zero_fraction: float
    min: float
    max: float
    percentiles: dict[int, float]
    weak_fraction: float = 0.0
    """Share of activations that fire weakly: `0 < |a| < weak * max |a|` (from the sample)."""


class _Running:
    """Streaming moments, extremes and a uniform sample (random keys, keep the top keys)."""

    def __init__(self, sample_size: int, generator: torch.Generator) -> None:
        self.n, self.sum, self.sumsq, self.zeros = 0, 0.0, 0.0, 0
        self.min, self.max = float("inf"), float("-inf")
        self.size, self.gen = sample_size, generator
        self.keys, self.values = torch.empty(0), torch.empty(0)

    def update(self, a: torch.Tensor) -> None:
        flat = a.flatten().double()
        self.n += flat.numel()
        self.sum += float(flat.sum())
        self.sumsq += float((flat * flat).sum())
        self.zeros += int((flat == 0).sum())
        self.min, self.max = min(self.min, float(flat.min())), max(self.max, float(flat.max()))
        keys = torch.cat([self.keys, torch.rand(flat.numel(), generator=self.gen)])
        values = torch.cat([self.values, flat.float()])
        if len(keys) > self.size:
            keep = keys.topk(self.size).indices
            keys, values = keys[keep], values[keep]
        self.keys, self.values = keys, values


def _weak_fraction(values: torch.Tensor, below: float) -> float:
    mags = values.abs()
    return float(((mags > 0) & (mags < below)).float().mean()) if len(values) else 0.0


def activation_stats(
    model: nn.Module,
    data: Any,
    layers: Sequence[str],
    batch_size: int = 256,
    percentiles: Sequence[int] = (1, 5, 25, 50, 75, 95, 99),
    sample_size: int = 1_000_000,
    seed: int = 0,
    weak: float = 0.1,
) -> list[LayerStats]:
    """Mean, std, fraction exactly zero, min, max, percentiles and the fraction of weak
    activations (nonzero, under `weak` times the layer's largest magnitude) per layer, streamed.

    Moments and extremes are exact; percentiles and the weak fraction come from a uniform
    sample of `sample_size` activations per layer (exact when the layer has no more values).
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    run = {n: _Running(sample_size, gen) for n in layers}
    shapes: dict[str, list[int]] = {}
    with eval_mode(model), torch.no_grad(), record_layers(model, layers) as rec:
        for x in iter_batches(data, batch_size):
            run_recorded(model, x.to(device), rec)
            for n in layers:
                run[n].update(rec[n].cpu())
                shapes[n] = list(rec[n].shape[1:])
    out = []
    q = torch.tensor([p / 100 for p in percentiles])
    for n, r in run.items():
        var = (r.sumsq - r.sum * r.sum / r.n) / max(r.n - 1, 1)
        qs = torch.quantile(r.values, q)
        out.append(
            LayerStats(
                name=n,
                shape=shapes[n],
                count=r.n,
                mean=r.sum / r.n,
                std=max(var, 0.0) ** 0.5,
                zero_fraction=r.zeros / r.n,
                min=r.min,
                max=r.max,
                percentiles={p: float(v) for p, v in zip(percentiles, qs)},
                weak_fraction=_weak_fraction(r.values, weak * max(abs(r.min), abs(r.max))),
            )
        )
    return out


@dataclass
class TopK:
    """The k inputs (indices into the data) that excite a unit most, best first.

    `positions` give, per input, where in the feature map the maximum was (for `reduce="max"`
    over a spatial map), or the neuron's own position (for a single neuron); else empty.
    """

    indices: list[int]
    values: list[float]
    positions: list[tuple[int, ...]]


def _unit_values(a: torch.Tensor, neuron: tuple[int, ...] | None, reduce: str) -> tuple:
    """Per-input score and flat argmax position of one channel's map `a` of shape (N, *S)."""
    zeros = torch.zeros(len(a), dtype=torch.long)
    if neuron is not None:
        return a[(slice(None), *neuron)], zeros
    if a.dim() == 1:
        return a, zeros
    if reduce == "mean":
        return a.flatten(1).mean(1), zeros
    return a.flatten(1).max(1)


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
    """Top-k inputs for a channel (max or mean over space) or one neuron `(y, x)` of it.

    Streams over the data keeping only the running top k (ties keep the earlier input).
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    device = model_device(model)
    best_v, best_i = torch.empty(0), torch.empty(0, dtype=torch.long)
    best_p = torch.empty(0, dtype=torch.long)
    offset, spatial = 0, ()
    with eval_mode(model), torch.no_grad(), record_layers(model, [layer]) as rec:
        for x in iter_batches(data, batch_size):
            run_recorded(model, x.to(device), rec)
            if channel >= rec[layer].shape[1]:
                raise ValueError(
                    f"layer {layer!r} has {rec[layer].shape[1]} channels, no channel {channel}"
                )
            a = rec[layer][:, channel].float().cpu()
            spatial = tuple(a.shape[1:])
            v, p = _unit_values(a, neuron, reduce)
            idx = torch.arange(offset, offset + len(a))
            offset += len(a)
            vals, order = torch.cat([best_v, v]).sort(descending=True, stable=True)
            keep = order[:k]
            best_v, best_i = vals[:k], torch.cat([best_i, idx])[keep]
            best_p = torch.cat([best_p, p])[keep]
    positions: list[tuple[int, ...]] = []
    if neuron is not None:
        positions = [tuple(neuron)] * len(best_i)
    elif reduce == "max" and spatial:
        positions = [
            tuple(int(c) for c in torch.unravel_index(p, spatial)) for p in best_p.unbind()
        ]
    return TopK(best_i.tolist(), best_v.tolist(), positions)
