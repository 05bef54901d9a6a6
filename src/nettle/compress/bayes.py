"""Bayesian compression: prune groups by their dropout rate, reduce weight precision, report.

After training a model built from `nettle.nn.bayesian` layers (loss = cross-entropy +
KL / number of training examples), `compress_bayesian` decides which groups survive
(`log alpha < threshold`), how many significand bits each layer's surviving weights need given
their posterior variance, and reports "architecture compression factor X, bit-precision factor Y"
(Louizos, Ullrich & Welling 2017). `apply_compression` loads the pruned, rounded weights into the
layers for inference, so the accuracy after reduced precision can be measured.

Masks follow a feed-forward chain in module order: a Linear layer's output rows die with the next
Linear layer's pruned input units; a convolution's input channels die with the previous
convolution's pruned output channels; a convolution feeding a Linear layer (after flattening)
loses the channels whose every flattened unit was pruned. Layers whose shapes do not chain keep
only their own group mask.

Precision (as the authors' compression code): the unit round-off of `t` significand bits is
`0.5 * 2^(1 - t)`; a weight needs as many bits as there are `t` in 1..23 whose round-off exceeds
twice its posterior variance; a layer uses the ceiling of the mean over its surviving weights.
Exponent bits are `ceil(log2(log2(max|mu|) + 1) + 1)` (at least 1), one sign bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer
from nettle.nn.bayesian import (
    BayesianLayer,
    Conv2dGroupNJ,
    LinearGroupNJ,
    bayesian_kl,
    clip_variances,
)

__all__ = [
    "BayesCompression",
    "BayesObjective",
    "LayerCompression",
    "apply_compression",
    "bayes_report",
    "bayesian_layers",
    "compress_bayesian",
    "format_compression",
    "group_masks",
    "significand_bits",
]

_MAX_BITS = 23


@dataclass
class LayerCompression:
    """The sparsity and precision of one Bayesian layer.

    `groups_kept` counts the groups (input units of a Linear layer, output channels of a
    convolution) that keep at least one weight after the chained masks.
    """

    name: str
    kind: str
    groups: int
    groups_kept: int
    weights: int
    weights_kept: int
    significand_bits: int

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned."""
        return 1.0 - self.weights_kept / self.weights if self.weights else 0.0


@dataclass
class BayesCompression:
    """Compression of a whole model; `accuracy_reduced` is filled by the caller when measured."""

    architecture_factor: float
    bit_precision_factor: float
    exponent_bits: int
    layers: list[LayerCompression] = field(default_factory=list)
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


def _weight_masks(layers: list[BayesianLayer], groups: list[torch.Tensor]) -> list[torch.Tensor]:
    in_keep: list[torch.Tensor | None] = [None] * len(layers)
    out_keep: list[torch.Tensor | None] = [None] * len(layers)
    for i, (layer, g) in enumerate(zip(layers, groups)):
        if isinstance(layer, LinearGroupNJ):
            in_keep[i] = g
        else:
            out_keep[i] = g
    for i in range(len(layers) - 1):
        a, b = layers[i], layers[i + 1]
        if isinstance(a, LinearGroupNJ) and isinstance(b, LinearGroupNJ):
            if b.in_features == a.out_features:
                out_keep[i] = groups[i + 1]
        elif isinstance(a, Conv2dGroupNJ) and isinstance(b, Conv2dGroupNJ):
            if b.in_channels == a.out_channels:
                in_keep[i + 1] = groups[i]
        elif (
            isinstance(a, Conv2dGroupNJ)
            and isinstance(b, LinearGroupNJ)
            and b.in_features % a.out_channels == 0
        ):
            per_channel = groups[i + 1].view(a.out_channels, -1)
            out_keep[i] = groups[i] & per_channel.any(dim=1)
            in_keep[i + 1] = groups[i + 1] & groups[i].repeat_interleave(per_channel.shape[1])
    masks = []
    for layer, ik, ok in zip(layers, in_keep, out_keep):
        w = layer.weight_mu
        rows = ok if ok is not None else torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        cols = ik if ik is not None else torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
        mask = rows[:, None] & cols[None, :]
        masks.append(mask.view(*mask.shape, *([1] * (w.dim() - 2))).expand_as(w))
    return masks


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
    layers = [m for _, m in named]
    groups = group_masks(model, thresholds)
    with torch.no_grad():
        masks = _weight_masks(layers, groups)
        posts = [m.posterior() for m in layers]
        kept_mu = [mu[mask] for (mu, _), mask in zip(posts, masks)]
        nonempty = [k.abs().max().item() for k in kept_mu if k.numel()]
        exp_bits = _exponent_bits(max(nonempty) if nonempty else 1.0)
        bits = [significand_bits(var[mask]) for (_, var), mask in zip(posts, masks)]
    rows, n_orig, n_kept, out_bits = [], 0, 0, 0.0
    for (name, layer), g, mask, b in zip(named, groups, masks, bits):
        kept = int(mask.sum())
        live = mask.any(dim=0) if isinstance(layer, LinearGroupNJ) else mask.flatten(1).any(1)
        rows.append(
            LayerCompression(
                name, type(layer).__name__, g.numel(), int(live.sum()), mask.numel(), kept, b
            )
        )
        n_orig, n_kept = n_orig + mask.numel(), n_kept + kept
        out_bits += kept * (1 + exp_bits + b)
    arch = n_orig / n_kept if n_kept else math.inf
    precision = 32.0 * n_kept / out_bits if out_bits else math.inf
    return BayesCompression(arch, precision, exp_bits, rows), masks, bits


def apply_compression(model: nn.Module, masks: Iterable[torch.Tensor], bits: Iterable[int]) -> None:
    """Load pruned weights rounded to each layer's precision; switch layers to deterministic.

    The rounding grid of `t` bits is the unit round-off `0.5 * 2^(1 - t)`. Call `model.eval()`
    before inference; `set_compressed(None)` and `deterministic = False` undo it.
    """
    for (_, layer), mask, b in zip(bayesian_layers(model), masks, bits):
        with torch.no_grad():
            mu = layer.posterior()[0] * mask
            delta = 0.5 * 2.0 ** (1.0 - max(b, 1))
            layer.set_compressed(torch.floor(mu / delta + 0.5) * delta)
        layer.deterministic = True


def format_compression(report: BayesCompression) -> str:
    """The one-line summary plus a per-layer sparsity table, as plain text."""
    acc = "n/a" if report.accuracy_reduced is None else f"{100 * report.accuracy_reduced:.2f}%"
    lines = [
        f"architecture compression factor {report.architecture_factor:.1f}, "
        f"bit-precision factor {report.bit_precision_factor:.1f}, "
        f"accuracy after reduced precision {acc}",
        f"{'layer':<20} {'groups kept':>12} {'weights kept':>14} {'sparsity':>9} {'bits':>5}",
    ]
    for r in report.layers:
        lines.append(
            f"{r.name:<20} {f'{r.groups_kept}/{r.groups}':>12} "
            f"{f'{r.weights_kept}/{r.weights}':>14} {r.sparsity:>9.1%} {r.significand_bits:>5d}"
        )
    return "\n".join(lines)


def bayes_report(
    model: nn.Module, threshold: float, accuracy: Callable[[nn.Module], float]
) -> dict[str, Any]:
    """Prune and reduce precision, measure accuracy, then put the model back as trained.

    Args:
        model: a trained model of `nettle.nn.bayesian` layers.
        threshold: the `log alpha` pruning threshold.
        accuracy: the test accuracy of a model (called once, on the compressed model).

    Returns:
        `BayesCompression.to_dict()` with `accuracy_reduced` set, plus its `text`
        (`format_compression`).
    """
    report, masks, bits = compress_bayesian(model, threshold)
    apply_compression(model, masks, bits)
    try:
        report.accuracy_reduced = accuracy(model)
    finally:
        for _, layer in bayesian_layers(model):
            layer.deterministic = False
            layer.set_compressed(None)
    return report.to_dict() | {"text": format_compression(report)}


class BayesObjective:
    """Variational loss: cross-entropy + KL / (number of training examples).

    The KL of the whole model is scaled by the number of *examples* (not minibatches), so the
    per-batch loss is an unbiased estimate of the negative ELBO per example; after every
    optimiser step the layers' variances are clipped (`clip_var`). After training,
    `final_report` prunes at `threshold` and reports the compression (`bayes_report`).
    """

    def __init__(self, num_examples: int, threshold: float = -3.0) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        self.num_examples = num_examples
        self.threshold = threshold

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("forward"):
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            kl = bayesian_kl(model) / self.num_examples
        return LossOutput(ce + kl, logits, {"ce": ce.detach(), "kl": kl.detach()})

    def after_step(self, model: nn.Module) -> None:
        clip_variances(model)

    def final_report(
        self, model: nn.Module, accuracy: Callable[[nn.Module], float]
    ) -> dict[str, Any]:
        """`{"bayes": bayes_report(...)}` of the trained model."""
        return {"bayes": bayes_report(model, self.threshold, accuracy)}
