"""Redirected ReLU gradients for feature visualisation (Lucid's `redirected_relu_grad`).

A ReLU unit that is off for the starting image passes no gradient back, so optimising its
channel from a grey start never moves: the image stays grey and the objective stays 0. Inside
`redirected_relu(model)` every `nn.ReLU` (and `nn.ReLU6`) computes the same outputs, but where no
gradient at all reaches an example through the ReLU, the incoming gradient is passed through
except where it would push an already negative input further down. Once the unit turns on, the
ordinary ReLU gradient is used. Functional `F.relu` calls inside a `forward` are not changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["redirected_relu"]


class _RedirectedReLU(torch.autograd.Function):
    """max(x, 0) (or min(max(x, 0), 6)) forward; the ReLU gradient, redirected when it is 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        relu_grad = grad * ((x > 0) & (x < ctx.upper))
        # `grad` is of the loss being minimised: grad > 0 pushes the input lower
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        n = len(x) if x.dim() > 1 else 1  # examples along the first dimension
        flows = relu_grad.reshape(n, -1).abs().amax(1) > 0
        flows = flows.view(-1, *[1] * (x.dim() - 1)) if x.dim() > 1 else flows[0]
        return torch.where(flows, relu_grad, redirected), None


@contextmanager
def redirected_relu(model: nn.Module) -> Iterator[nn.Module]:
    """Redirect the gradients of the model's `nn.ReLU`/`nn.ReLU6` modules (undone on exit).

    In-place ReLUs are made out-of-place meanwhile (the input is needed for the gradient).
    """
    changed: list[tuple[nn.Module, bool]] = []
    handles = []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            upper = 6.0 if isinstance(m, nn.ReLU6) else float("inf")
            changed.append((m, m.inplace))
            m.inplace = False
            hook = lambda mod, inp, out, upper=upper: _RedirectedReLU.apply(inp[0], upper)  # noqa: E731
            handles.append(m.register_forward_hook(hook))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        for m, inplace in changed:
            m.inplace = inplace
