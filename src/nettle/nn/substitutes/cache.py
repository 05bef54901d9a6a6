"""Inference fast forms: a substitute's rebuilt weight, cached while nothing can change it.

Hashed, tensor-decomposed and ACDC layers rebuild a dense weight from their parameters on
every forward pass, which training needs (the gradient flows through the rebuild) and
inference does not. `WeightCache` keeps the rebuilt tensor while the layer is in eval mode
and no gradient is being recorded for its parameters, and rebuilds it when any of them (or
its buffers, e.g. a hash table) changes: the key holds every tensor's storage pointer,
device, dtype and `_version` counter, which in-place updates bump (an optimizer step,
`load_state_dict`, `copy_` under `no_grad`) and `module.to(...)` replaces. Going back to
training mode drops the cached tensor, so training never sees it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Doubled(WeightCached, nn.Linear):
    ...     def forward(self, x):
    ...         return nn.functional.linear(x, self.cached_weight("w", lambda: 2 * self.weight))
    >>> layer = Doubled(2, 2).eval()
    >>> with torch.no_grad():
    ...     _ = layer(torch.ones(1, 2))
    >>> layer.weight_cache.holds("w")
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["WeightCache", "WeightCached", "cacheable", "state_key"]

Key = tuple[tuple[int, int, str, torch.dtype], ...]


def state_key(module: nn.Module) -> Key:
    """What identifies the current values of `module`'s parameters and buffers."""
    return tuple(
        (_pointer(t), t._version, str(t.device), t.dtype)
        for t in (*module.parameters(), *module.buffers())
    )


def cacheable(module: nn.Module) -> bool:
    """Whether a tensor rebuilt from `module`'s parameters may be cached now.

    Yes in eval mode unless autograd would record a graph through a parameter (grad mode on
    and a parameter that requires grad: gradients must then reach the parameters).
    """
    if module.training:
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()))


def _pointer(t: torch.Tensor) -> int:
    return id(t) if t.device.type == "meta" else t.untyped_storage().data_ptr()


class WeightCache:
    """Named tensors rebuilt from a module's state, valid while that state is unchanged."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Key, torch.Tensor]] = {}

    def get(self, module: nn.Module, name: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`build()`, cached in eval mode when no gradient is recorded for the parameters.

        In training mode, or when autograd records a graph through any parameter (grad mode
        on and a parameter requires grad), `build()` runs every call, as without a cache.
        """
        if not cacheable(module):
            return build()
        key = state_key(module)
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            # a normal tensor even when called in inference mode, so that a later pass
            # recording a graph for its input (an attack on a frozen model) can save it
            with torch.inference_mode(False), torch.no_grad():
                entry = (key, build().detach())
            self._entries[name] = entry
        return entry[1]

    def holds(self, name: str) -> bool:
        """Whether a tensor is cached under `name` (it may be stale until the next `get`)."""
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every cached tensor."""
        self._entries.clear()


class WeightCached(nn.Module):
    """Mixin: `cached_weight(name, build)` through a `WeightCache`, dropped by `train()`."""

    def cached_weight(self, name: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The tensor `build()` makes, cached while the layer's state allows (`WeightCache`)."""
        cache = self.__dict__.get("weight_cache")
        if cache is None:
            cache = self.__dict__["weight_cache"] = WeightCache()
        return cache.get(self, name, build)

    def train(self, mode: bool = True) -> WeightCached:
        if mode and "weight_cache" in self.__dict__:
            self.__dict__["weight_cache"].clear()
        return super().train(mode)
