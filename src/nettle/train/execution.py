"""How the trainer executes the model, without changing what it computes.

- `train.channels_last`: the model's 4-D parameters and buffers, and every 4-D input batch, in
  `torch.channels_last` memory format (NHWC strides), which lets cuDNN pick its tensor-core
  convolution kernels without transposing, above all under bf16/fp16. Checkpoints hold the same
  values either way (a state dict loads into a model of either format).
- `train.compile`: the module the objective calls is `torch.compile(model)`; parameters,
  checkpoints and evaluation use the eager module underneath. Compilation happens on the first
  call with each new batch shape (the first step, and the smaller last batch of an epoch), so
  the trainer runs those steps inside a `compile` phase of its `PhaseTimer` (tracing and
  compiling forward and backward, plus that step's own execution) instead of `forward` and
  `backward`. Where compilation fails (no C++ compiler, an op dynamo cannot trace, a platform
  torch.compile does not support), the run logs one warning and continues in eager mode: the
  failing step is re-run eagerly from the same buffers and random state, so nothing of the
  failed attempt remains.

Both reorder the same float32 arithmetic, as running on another device does, so they are
execution settings (`nettle.config.EXECUTION_KEYS`), outside the run's identity; `train.precision`
changes the arithmetic and is part of it (`nettle.train.precision`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["Compiled", "channels_last_input", "to_channels_last"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def to_channels_last(model: nn.Module) -> nn.Module:
    """`model` with its 4-D parameters and buffers in channels_last format (in place)."""
    return model.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch (N, C, H, W) in channels_last format; any other tensor unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions by which torch.compile says that it could not compile."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:  # pragma: no cover - every torch nettle supports has dynamo
        pass
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # pragma: no cover - older torch: dynamo wraps inductor's errors
        pass
    return tuple(errors)


class Compiled:
    """The module a trainer calls: `torch.compile(module)`, or `module` after a failure.

    Args:
        module: the eager module (a model, or its DistributedDataParallel wrapper).
        model: the model whose buffers a failed first call must leave as they were.

    Attributes:
        net: what to call now (compiled, or the eager module after a fallback).
        failed: the one-line reason compilation was abandoned, or None.
    """

    def __init__(self, module: nn.Module, model: nn.Module) -> None:
        self.eager, self.model = module, model
        self.failed: str | None = None
        self._shapes: set[tuple[int, ...]] = set()
        try:
            self.net: nn.Module = torch.compile(module)
        except Exception as exc:  # any refusal (platform, Python version) means eager
            self._fall_back(exc)

    def is_new(self, x: torch.Tensor) -> bool:
        """Whether a call with a batch shaped like `x` will compile (first time for the shape)."""
        return self.failed is None and tuple(x.shape) not in self._shapes

    def first_call(self, fn: Callable[[nn.Module], T], x: torch.Tensor) -> T:
        """Run `fn(net)` for a new batch shape; on a compilation error restore the model's
        buffers and the random state, switch to eager and run `fn(eager)` instead."""
        buffers = [b.detach().clone() for b in self.model.buffers()]
        rng = _rng_state(x.device)
        try:
            result = fn(self.net)
        except _compile_errors() as exc:
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            _set_rng_state(x.device, rng)
            self._fall_back(exc)
            return fn(self.net)
        self._shapes.add(tuple(x.shape))
        return result

    def _fall_back(self, exc: BaseException) -> None:
        first = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        self.failed = f"{type(exc).__name__}: {first}"
        self.net = self.eager
        log.warning("torch.compile failed (%s); training continues in eager mode", self.failed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(device: torch.device, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
