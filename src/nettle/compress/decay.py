"""Compression-ratio-scaled (CRS) weight decay.

Gray, Crowley & Storkey 2019 (arXiv:1906.00859): when fewer parameters generate a layer's weight
matrix, scaling their weight decay by the compression ratio keeps the total variance of the
implied Gaussian prior over the full matrix fixed. The ratio is one scalar for the whole network:

    rho = params(network built with the substitute) / params(the same network uncompressed)

The compressed parameters (those a substitute declares through a `compressed_parameters()`
method: low-rank factors, hashed budgets, ACDC diagonals, tensor cores, ShuffleNet convolutions)
get `rho * weight_decay`; every other parameter (depthwise convolutions outside ShuffleNet,
dense stem, shortcuts, classifier, norms) keeps `weight_decay`. With nothing compressed,
`rho = 1` and this is plain weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["DecayPlan", "compressed_parameters", "compression_ratio", "scaled_decay_groups"]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def compression_ratio(compressed: nn.Module, reference: nn.Module) -> float:
    """Parameters of `compressed` over parameters of `reference` (the uncompressed network)."""
    ref = _count(reference)
    if ref == 0:
        raise ValueError("the reference network has no parameters")
    return _count(compressed) / ref


def compressed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters declared compressed by the substitutes inside `model` (each once)."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        declare = getattr(type(module), "compressed_parameters", None)
        if callable(declare):
            for p in module.compressed_parameters():
                seen.setdefault(id(p), p)
    return list(seen.values())


@dataclass
class DecayPlan:
    """What `scaled_decay_groups` decided, for the run record."""

    weight_decay: float
    ratio: float
    compressed_decay: float
    compressed_params: int
    other_params: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def scaled_decay_groups(
    model: nn.Module, weight_decay: float, ratio: float, enabled: bool = True
) -> tuple[list[dict[str, Any]], DecayPlan]:
    """Optimiser parameter groups with the compressed parameters' decay scaled by `ratio`.

    Args:
        model: the (possibly substituted) network.
        weight_decay: the base decay.
        ratio: `compression_ratio(model, uncompressed_model)`.
        enabled: `False` gives one group with plain decay (the plan still records the ratio).
    """
    if ratio <= 0:
        raise ValueError(f"compression ratio must be positive, got {ratio}")
    params = [p for p in model.parameters() if p.requires_grad]
    compressed = compressed_parameters(model) if enabled else []
    ids = {id(p) for p in compressed}
    compressed = [p for p in params if id(p) in ids]
    others = [p for p in params if id(p) not in ids]
    scaled = ratio * weight_decay if enabled else weight_decay
    groups: list[dict[str, Any]] = [{"params": others, "weight_decay": weight_decay}]
    if compressed:
        groups.append({"params": compressed, "weight_decay": scaled})
    plan = DecayPlan(
        weight_decay,
        ratio,
        scaled,
        sum(p.numel() for p in compressed),
        sum(p.numel() for p in others),
    )
    return groups, plan
