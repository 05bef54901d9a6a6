"""Measured latency of a model's forward pass beside its counted cost (`nettle count --latency`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nettle.measure.inputs import Shapes, forward_kwargs_on, make_inputs, placement
from nettle.measure.report import Latency

__all__ = ["measure_latency"]


def measure_latency(
    model: nn.Module,
    input_shape: Shapes,
    batch_sizes: Sequence[int] = (1,),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    forward_kwargs: dict[str, Any] | None = None,
    min_run_time: float = 0.2,
) -> list[Latency]:
    """Wall-clock time of one forward pass (eval mode, no grad) at each batch size.

    `torch.utils.benchmark.Timer.blocked_autorange` warms up, then times blocks of calls for
    at least `min_run_time` seconds, synchronising the accelerator; it runs with torch's
    current number of threads (the Timer's own default is one). Modes are restored after.

    Args:
        model: the module to time, already on `device`.
        input_shape: one shape without the batch dim, or a list of shapes (see `count`).
        batch_sizes: the batches to time, e.g. (1, 64).
        device: where the model is (default: its device); the meta device does no work.
        dtype: dtype of the made inputs (default: the model's floating dtype).
        forward_kwargs: keyword arguments of the forward, as in `count`.
        min_run_time: seconds of timed calls per batch size.
    """
    # imported here: torch.utils.benchmark loads cpp_extension, which warns at import on
    # machines with a CUDA toolkit but no runtime, and `import nettle.measure` must stay quiet
    from torch.utils.benchmark import Timer

    dev, dt = placement(model, device, dtype)
    if dev.type == "meta":
        raise ValueError("measure_latency: the meta device runs no arithmetic; use cpu or cuda")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"measure_latency: batch sizes must be positive, got {batch_sizes}")
    kwargs = forward_kwargs_on(dev, forward_kwargs)
    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{threads} threads"
    modes = {m: m.training for m in model.modules()}
    model.eval()
    out = []
    try:
        for b in batch_sizes:
            inputs = make_inputs(input_shape, b, dev, dt)

            def forward(inputs: tuple[torch.Tensor, ...] = inputs) -> None:
                with torch.no_grad():
                    model(*inputs, **kwargs)

            timer = Timer("forward()", globals={"forward": forward}, num_threads=threads)
            m = timer.blocked_autorange(min_run_time=min_run_time)
            out.append(Latency(b, f"{dev} ({name})", m.median, m.iqr, len(m.times)))
    finally:
        for module, training in modes.items():
            module.training = training
    return out
