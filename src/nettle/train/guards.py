"""Guards of a training run: non-finite losses, gradient clipping, the default dtype.

- `check_finite` tells a NaN/Inf loss; the trainer then saves a debug snapshot with
  `save_nonfinite_snapshot` (model, optimiser, the offending batch, the step) so the failure can
  be replayed, and raises `NonFiniteLossError`. With `train.nan_guard_grads` the global gradient
  norm (`grad_norm`, or the one clipping computes anyway) is checked the same way, before the
  optimiser step, so the snapshot's weights are the last finite ones. Under `train.precision:
  fp16` overflowing gradients are the gradient scaler's to handle (it skips the step and lowers
  its scale), so the gradient check is left to it; the loss check stays.
- `clip_gradients` clips by global norm or by value and returns the norm before clipping.
- `default_dtype_guard` restores torch's default dtype if code inside it (an import, a user's
  model) changed it, logging a warning: such a change silently turns later tensors into float64.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from nettle.train.checkpoint import save_checkpoint

__all__ = [
    "NonFiniteLossError",
    "check_finite",
    "clip_gradients",
    "default_dtype_guard",
    "grad_norm",
    "save_nonfinite_snapshot",
]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; `snapshot` is the debug file written (if any)."""

    def __init__(self, message: str, step: int, snapshot: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.snapshot = snapshot


def check_finite(loss: torch.Tensor | float, step: int | None = None) -> bool:
    """Whether `loss` (a float or a tensor) is finite; a tensor costs one device sync."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            return bool(torch.isfinite(loss.detach()).all())
        loss = float(loss.detach())
    return math.isfinite(loss)


def save_nonfinite_snapshot(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    step: int,
    **extra: Any,
) -> Path:
    """Atomically save what replays a non-finite step: weights, optimiser, the batch, the step.

    `extra` holds plain values (the loss, the gradient norm, the config).
    """
    snapshot = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "batch": {"x": x.detach().cpu(), "y": y.detach().cpu()},
        "step": step,
        **extra,
    }
    return save_checkpoint(snapshot, path)


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> float:
    """The global L2 norm of the gradients (0 when there are none)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )


def clip_gradients(
    parameters: Iterable[torch.nn.Parameter], max_value: float, mode: str = "norm"
) -> float:
    """Clip gradients by global L2 norm (`mode="norm"`) or elementwise (`"value"`).

    Returns:
        The global gradient norm before clipping.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if mode == "norm":
        return float(torch.nn.utils.clip_grad_norm_(params, max_value))
    if mode == "value":
        norm = grad_norm(params)
        torch.nn.utils.clip_grad_value_(params, max_value)
        return norm
    raise ValueError(f"gradient clipping mode must be 'norm' or 'value', got {mode!r}")


@contextlib.contextmanager
def default_dtype_guard(expected: torch.dtype | None = None) -> Iterator[None]:
    """Keep torch's default dtype at `expected` (default: its value on entry) inside and after."""
    want = expected or torch.get_default_dtype()
    try:
        yield
    finally:
        now = torch.get_default_dtype()
        if now != want:
            log.warning("the default dtype was changed to %s; restoring %s", now, want)
            torch.set_default_dtype(want)
