"""Widening the layer that feeds an activation, for maxout-style folds (`nettle.models.units`).

A fold of group size k turns `k * C` channels into `C`, so the Conv2d/Linear layer before it
(and the BatchNorm between them) must produce k times as many. Which layer that is comes from
one traced forward pass (hooks on the leaf modules, tensors matched by identity), never from
the order in which a model registers its modules: in a pre-activation block the ReLU after
`bn1` is fed by the previous block, not by the `conv1` registered beside it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nettle.config import ConfigError
from nettle.inspect.activations import eval_mode

__all__ = ["feeding_layers", "widen"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _trace(model: nn.Module, example: torch.Tensor) -> dict[str, list[tuple[list[int], int]]]:
    """Leaf module name -> its calls: (ids of the input tensors, id of the output)."""
    calls: dict[str, list[tuple[list[int], int]]] = {}
    alive: list[Any] = []  # keeps every traced tensor alive, so no id is reused
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(m: nn.Module, inputs: tuple, output: Any, name: str = name) -> None:
            alive.append((inputs, output))
            ids = [id(t) for t in inputs if isinstance(t, torch.Tensor)]
            calls.setdefault(name, []).append((ids, id(output)))

        handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def feeding_layers(
    model: nn.Module, activations: list[str], example: torch.Tensor
) -> dict[str, list[str]]:
    """Activation name -> [the Conv2d/Linear feeding it, and the BatchNorm between, if any].

    Raises:
        ConfigError: an activation that is not called exactly once, is fed by anything but a
            plain Conv2d/Linear (through at most one BatchNorm), or whose feeding layer's
            output is used by another module too.
    """
    calls = _trace(model, example)
    made_by = {out: n for n, cs in calls.items() for _, out in cs}
    users: dict[int, int] = {}
    for cs in calls.values():
        for ids, _ in cs:
            for i in ids:
                users[i] = users.get(i, 0) + 1
    modules = dict(model.named_modules())
    out: dict[str, list[str]] = {}
    for act in activations:
        seen = calls.get(act, [])
        if len(seen) != 1:
            raise ConfigError(
                f"model.units: maxout at {act!r}: the activation runs {len(seen)} times in a "
                "forward pass; a fold needs one that runs once"
            )
        chain, tensor = [], seen[0][0][0] if seen[0][0] else None
        while tensor is not None:
            src = made_by.get(tensor)
            if src is None or users.get(tensor, 0) != 1:
                break
            chain.append(src)
            if not isinstance(modules[src], _NORMS) or len(chain) > 1:
                break
            tensor = calls[src][0][0][0]
        if not chain or type(modules[chain[-1]]) not in (nn.Conv2d, nn.Linear):
            raise ConfigError(
                f"model.units: maxout at {act!r}: its input comes from {_source(chain, modules)}, "
                "not from a plain Conv2d/Linear (through at most one BatchNorm) used only there"
            )
        out[act] = list(reversed(chain))
    return out


def _source(chain: list[str], modules: dict[str, nn.Module]) -> str:
    """Says where a refused activation's input comes from."""
    other = "an operation that is not a module or a tensor used twice (e.g. a residual sum)"
    if not chain:
        return other
    last = f"{chain[-1]!r} ({type(modules[chain[-1]]).__name__})"
    return f"{last} fed by {other}" if isinstance(modules[chain[-1]], _NORMS) else last


def widen(model: nn.Module, name: str, factor: int) -> nn.Module:
    """Replace the Conv2d, Linear or BatchNorm `name` by one with `factor` times its outputs.

    A conv/linear layer is drawn fresh, N(0, std of its old weights), with a zero bias; a
    BatchNorm starts at weight 1, bias 0 and fresh running statistics. Returns the new module.
    """
    old = model.get_submodule(name)
    dd = {"device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(
            old.in_features, old.out_features * factor, old.bias is not None, **dd
        )
    elif isinstance(old, nn.Conv2d):
        new = nn.Conv2d(
            old.in_channels,
            old.out_channels * factor,
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            old.groups,
            old.bias is not None,
            old.padding_mode,
            **dd,
        )
    else:
        norm = type(old)
        new = norm(
            old.num_features * factor,
            old.eps,
            old.momentum,
            old.affine,
            old.track_running_stats,
            **dd,
        )
    if not isinstance(old, _NORMS) and not old.weight.is_meta:  # meta: shapes only
        with torch.no_grad():
            std = float(old.weight.std()) if old.weight.numel() > 1 else 1.0
            new.weight.normal_(0.0, std if std > 0 else 1.0)
            if new.bias is not None:
                new.bias.zero_()
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new.train(old.training))
    return new
