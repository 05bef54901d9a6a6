"""Bayesian compression's pruning and precision: masks, bits, factors, compressed weights.

For a trained model of `nettle.nn.bayesian` layers, `compress_bayesian` decides which groups
survive (`log alpha < threshold`), how many significand bits each layer's surviving weights need
given their posterior variance, and the factors of "architecture compression factor X,
bit-precision factor Y" (Louizos, Ullrich & Welling 2017), per layer and overall.
`apply_compression` loads the pruned (and rounded) weights into the layers for inference, so the
accuracy after pruning and after reduced precision can be measured (`nettle.compress.bayes`).

Masks follow the data flow between the layers (`nettle.compress.bayes_masks`): a Linear layer's
output rows die with the next Linear layer's pruned input units; a convolution's input channels
die with the previous convolution's pruned output channels; a convolution feeding a Linear layer
(after flattening) loses the channels whose every flattened unit was pruned. Layers joined by
anything else (a residual sum, a concatenation) keep only their own group mask.

Factors: architecture = weights over weights kept; bit precision = 32 bits over the bits each
kept weight needs. Precision (as the authors' compression code): the unit round-off of `t`
significand bits is `0.5 * 2^(1 - t)`; a weight needs as many bits as there are `t` in 1..23
whose round-off exceeds twice its posterior variance; a layer uses the ceiling of the mean over
its surviving weights. Exponent bits are `ceil(log2(log2(max|mu|) + 1) + 1)` (at least 1, over
the whole model), one sign bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from nettle.compress.bayes_masks import weight_masks
from nettle.nn.bayesian import BayesianLayer, LinearGroupNJ

__all__ = [
    "BayesCompression",
    "LayerCompression",
    "apply_compression",
    "bayesian_layers",
    "compress_bayesian",
    "format_compression",
    "group_masks",
    "remove_compression",
    "significand_bits",
]

_MAX_BITS = 23


@dataclass
class LayerCompression:
    """The sparsity and precision of one Bayesian layer.

    `groups_kept` counts the groups (input units of a Linear layer, output channels of a
    convolution) that keep at least one weight after the linked masks; `bits_per_weight` is
    sign + exponent + significand bits.
    """

    name: str
    kind: str
    groups: int
    groups_kept: int
    weights: int
    weights_kept: int
    significand_bits: int
    bits_per_weight: int

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned."""
        return 1.0 - self.weights_kept / self.weights if self.weights else 0.0

    @property
    def architecture_factor(self) -> float:
        """Weights over weights kept (inf when all are pruned)."""
        return self.weights / self.weights_kept if self.weights_kept else math.inf

    @property
    def bit_precision_factor(self) -> float:
        """32 bits over the bits each kept weight needs."""
        return 32.0 / self.bits_per_weight


@dataclass
class BayesCompression:
    """Compression of a whole model; the accuracies are filled by the caller when measured."""

    architecture_factor: float
    bit_precision_factor: float
    exponent_bits: int
    layers: list[LayerCompression] = field(default_factory=list)
    accuracy_pruned: float | None = None
    accuracy_reduced: float | None = None

    @property
    def total_factor(self) -> float:
        """32-bit dense size over pruned reduced-precision size (`X * Y`)."""
        return self.architecture_factor * self.bit_precision_factor

    def to_dict(self) -> dict:
        out = asdict(self)
        out["total_factor"] = self.total_factor
        for row, layer in zip(out["layers"], self.layers):
            row["sparsity"] = layer.sparsity
            row["architecture_factor"] = layer.architecture_factor
            row["bit_precision_factor"] = layer.bit_precision_factor
        return out


def bayesian_layers(model: nn.Module) -> list[tuple[str, BayesianLayer]]:
    """The Bayesian layers of `model` with their qualified names, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BayesianLayer)]


def group_masks(model: nn.Module, thresholds: float | Sequence[float] = -3.0) -> list[torch.Tensor]:
    """Boolean masks of the kept groups (`log alpha < threshold`), one per Bayesian layer."""
    layers = bayesian_layers(model)
    if isinstance(thresholds, (int, float)):
        thresholds = [float(thresholds)] * len(layers)
    if len(thresholds) != len(layers):
        raise ValueError(f"{len(thresholds)} thresholds given for {len(layers)} Bayesian layers")
    with torch.no_grad():
        return [m.log_alpha() < t for (_, m), t in zip(layers, thresholds)]


def significand_bits(var: torch.Tensor) -> int:
    """Significand bits a set of weights needs given their posterior variances."""
    if var.numel() == 0:
        return 0
    t = torch.arange(1, _MAX_BITS + 1, device=var.device, dtype=var.dtype)
    round_off = 0.5 * 2.0 ** (1.0 - t)
    per_weight = (2.0 * var.reshape(-1, 1) < round_off).sum(dim=1).to(var.dtype)
    return math.ceil(per_weight.mean().item())


def _exponent_bits(overflow: float) -> int:
    inner = math.log2(overflow) + 1.0 if overflow > 0 else 1.0
    return max(1, math.ceil(math.log2(max(inner, 1.0)) + 1.0))


def compress_bayesian(
    model: nn.Module, thresholds: float | Sequence[float] = -3.0
) -> tuple[BayesCompression, list[torch.Tensor], list[int]]:
    """Prune by `log alpha` and compute precisions.

    Returns:
        The report, the per-layer weight masks and the per-layer significand bits.
    """
    named = bayesian_layers(model)
    if not named:
        raise ValueError("the model has no Bayesian layers (nettle.nn.bayesian)")
    groups = group_masks(model, thresholds)
    with torch.no_grad():
        masks = weight_masks(model, named, groups)
        posts = [m.posterior() for _, m in named]
        kept_mu = [mu[mask] for (mu, _), mask in zip(posts, masks)]
        nonempty = [k.abs().max().item() for k in kept_mu if k.numel()]
        exp_bits = _exponent_bits(max(nonempty) if nonempty else 1.0)
        bits = [significand_bits(var[mask]) for (_, var), mask in zip(posts, masks)]
    rows, n_orig, n_kept, out_bits = [], 0, 0, 0.0
    for (name, layer), g, mask, b in zip(named, groups, masks, bits):
        kept = int(mask.sum())
        live = mask.any(dim=0) if isinstance(layer, LinearGroupNJ) else mask.flatten(1).any(1)
        per = 1 + exp_bits + b
        kind = type(layer).__name__
        rows.append(
            LayerCompression(name, kind, g.numel(), int(live.sum()), mask.numel(), kept, b, per)
        )
        n_orig, n_kept = n_orig + mask.numel(), n_kept + kept
        out_bits += kept * per
    arch = n_orig / n_kept if n_kept else math.inf
    precision = 32.0 * n_kept / out_bits if out_bits else math.inf
    return BayesCompression(arch, precision, exp_bits, rows), masks, bits


def apply_compression(
    model: nn.Module, masks: Iterable[torch.Tensor], bits: Iterable[int] | None = None
) -> None:
    """Load the pruned posterior means, rounded to each layer's precision when `bits` are
    given; switch the layers to deterministic.

    The rounding grid of `t` bits is the unit round-off `0.5 * 2^(1 - t)`. Call `model.eval()`
    before inference; `remove_compression` undoes it.
    """
    named = bayesian_layers(model)
    for (_, layer), mask, b in zip(named, masks, bits if bits is not None else [None] * len(named)):
        with torch.no_grad():
            mu = layer.posterior()[0] * mask
            if b is not None:
                delta = 0.5 * 2.0 ** (1.0 - max(b, 1))
                mu = torch.floor(mu / delta + 0.5) * delta
            layer.set_compressed(mu)
        layer.deterministic = True


def remove_compression(model: nn.Module) -> None:
    """Put the layers back as trained (stochastic, their own posterior)."""
    for _, layer in bayesian_layers(model):
        layer.deterministic = False
        layer.set_compressed(None)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def format_compression(report: BayesCompression) -> str:
    """The one-line summary plus a per-layer table, as plain text."""
    lines = [
        f"architecture compression factor {report.architecture_factor:.1f}, "
        f"bit-precision factor {report.bit_precision_factor:.1f}, "
        f"accuracy after reduced precision {_percent(report.accuracy_reduced)} "
        f"(after pruning {_percent(report.accuracy_pruned)})",
        f"{'layer':<24} {'groups kept':>12} {'weights kept':>16} {'sparsity':>9} {'bits':>5} "
        f"{'arch x':>8} {'bits x':>7}",
    ]
    for r in report.layers:
        lines.append(
            f"{r.name:<24} {f'{r.groups_kept}/{r.groups}':>12} "
            f"{f'{r.weights_kept}/{r.weights}':>16} {r.sparsity:>9.1%} "
            f"{r.significand_bits:>5d} {r.architecture_factor:>8.1f} {r.bit_precision_factor:>7.1f}"
        )
    return "\n".join(lines)
