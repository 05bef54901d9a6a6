"""Mixed precision (`train.precision`: fp32, bf16 or fp16) for training and evaluation.

- `fp32`: plain float32, no autocast (the default).
- `bf16`: `torch.autocast(device, torch.bfloat16)` around the objective (the forward pass and
  whatever phases it adds: an attack, a teacher). bfloat16 keeps float32's exponent range, so
  gradients need no scaling.
- `fp16`: autocast to float16 and a `torch.amp.GradScaler` with torch's defaults (initial scale
  2**16, halved after a step whose gradients overflowed, which is then skipped, doubled after
  2000 clean steps): the loss is multiplied by the scale before `backward` so that small
  gradients do not flush to zero in float16, and the gradients are unscaled before clipping,
  the gradient guard and the optimiser step. The scaler's state is part of the trainer's
  checkpoint (`"scaler"`), so a resumed fp16 run continues with the same scale and equals an
  uninterrupted one.

Autocast runs matrix products and convolutions in the low precision and keeps reductions and
losses (softmax, cross-entropy, norms) in float32 (torch's op lists); the weights, the
optimiser state and the backward pass's accumulation stay float32. Precision changes a run's
numbers, so it is part of the run's identity (unlike `train.channels_last` and
`train.compile`, see `nettle.train.execution`); evaluation (the trainer's test accuracy and
the attack stages of `nettle.experiment.evaluation`) runs under the same autocast.

Support: CPU autocast handles both bfloat16 and float16 for the layers of the zoo in torch 2.5
and later (float16 on a CPU is slow: a correctness setting there, not a speed-up); CUDA needs
a GPU with bfloat16 arithmetic (compute capability 8.0 or later) for `bf16`; other devices
must have autocast at all. `check_precision` says which in one line.
"""

from __future__ import annotations

import contextlib
import warnings
from contextlib import AbstractContextManager
from typing import Any

import torch

__all__ = ["PRECISIONS", "MixedPrecision", "autocast", "check_precision"]

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""Precision name -> the autocast dtype (None: no autocast)."""

_NO_AUTOCAST = contextlib.nullcontext()  # reusable: entering it costs nothing


def check_precision(
    precision: str, device: torch.device | str, option: str = "train.precision"
) -> None:
    """Refuse, in one `ValueError` line naming `option`, a precision `device` cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"{option} {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if PRECISIONS[precision] is None:
        return
    device = torch.device(device)
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"{option} {precision}: torch has no autocast for {device}; use fp32")
    if precision == "bf16" and device.type == "cuda" and not _cuda_bf16(device):
        name = torch.cuda.get_device_name(device)
        raise ValueError(
            f"{option} bf16: {name} has no bfloat16 arithmetic (compute capability 8.0 or "
            "later is needed); use fp16 or fp32"
        )


def _cuda_bf16(device: torch.device) -> bool:
    """Whether the CUDA `device` has native bfloat16 arithmetic (not emulated)."""
    if torch.version.hip is not None:  # ROCm: torch's own answer for the current device
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager[Any]:
    """The autocast context of `precision` on `device` (a no-op for fp32)."""
    return _autocast(PRECISIONS[precision], torch.device(device))


def _autocast(dtype: torch.dtype | None, device: torch.device) -> AbstractContextManager[Any]:
    return _NO_AUTOCAST if dtype is None else torch.autocast(device.type, dtype=dtype)


class MixedPrecision:
    """One run's precision: its autocast context and, for fp16, its gradient scaler.

    Args:
        precision: "fp32", "bf16" or "fp16" (checked against `device`).
        device: where the run computes.

    Example:
        >>> amp = MixedPrecision("bf16", "cpu")
        >>> with amp.autocast():
        ...     y = torch.nn.Linear(4, 2)(torch.ones(1, 4))
        >>> y.dtype, amp.scaler is None
        (torch.bfloat16, True)
    """

    def __init__(self, precision: str, device: torch.device | str) -> None:
        check_precision(precision, device)
        self.precision, self.device = precision, torch.device(device)
        self.dtype = PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def autocast(self) -> AbstractContextManager[Any]:
        """The context the objective (and evaluation) runs in (every step: the dtype and
        device are resolved once, in `__init__`)."""
        return _autocast(self.dtype, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, of the scaled loss when a scaler is in use."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale (fp16), before clipping or checking them."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> bool:
        """Step the optimiser (unless the scaler skips a step whose gradients overflowed) and
        the schedule (always: the learning rate follows the step count, so a resumed run
        gets the same one). Returns whether the optimiser stepped."""
        if self.scaler is None:
            optimizer.step()
            scheduler.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        stepped = self.scaler.get_scale() >= scale  # a skipped step lowers the scale
        with warnings.catch_warnings():  # torch warns when the very first step was skipped
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            scheduler.step()
        return stepped

    @property
    def handles_overflow(self) -> bool:
        """Whether non-finite gradients are expected and handled (skipped) by the scaler."""
        return self.scaler is not None

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state ({} without a scaler), for the checkpoint."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore what `state_dict` returned (nothing to do without a scaler or a state)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
