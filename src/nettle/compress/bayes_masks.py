"""Weight masks of a Bayesian network from its pruned groups, following the data flow.

A group normal-Jeffreys layer prunes its own groups: a Linear layer its input units (columns), a
convolution its output channels (rows). A pruned unit also makes weights of its neighbours
useless, where the two layers are joined by operations that keep units apart (batch norm,
activations, pooling, dropout, flattening; `PASSTHROUGH`):

* convolution -> convolution: the input channels of the second die with the first's pruned
  output channels;
* convolution -> (flatten) -> Linear: the Linear layer's inputs of a pruned channel die, and a
  channel whose every flattened input was pruned dies in the convolution (when the Linear layer
  is its only reader);
* Linear -> Linear: the first's output rows die with the second's pruned inputs (when the
  second is its only reader).

The links come from a `torch.fx` trace of the model (Bayesian layers, substitutes and modules
without a Bayesian layer inside are leaves), so a residual sum, a concatenation or any other operation breaks a link: those layers
keep only their own groups' masks. A model that cannot be traced keeps only its own masks. This
generalises the chain of the authors' LeNet example (`example.get_masks`) to any network.

Batch norm between two layers leaves a constant (its shift) on a pruned channel; the masks drop
it with the channel, and the accuracy after pruning measures that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from nettle.compress.bayes_convert import is_substitute
from nettle.nn.bayesian import BayesianLayer, Conv2dGroupNJ, LinearGroupNJ

__all__ = ["PASSTHROUGH", "layer_links", "weight_masks"]

log = logging.getLogger(__name__)

PASSTHROUGH: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
)
"""Modules that keep units (channels) apart: a pruned unit stays a unit of its own."""

_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.dropout,
    torch.flatten,
}
_METHODS = {"relu", "flatten", "view", "reshape"}
_FLATTEN = {torch.flatten, "flatten", "view", "reshape"}


class _Tracer(fx.Tracer):
    """Bayesian layers, substitutes and modules without a Bayesian layer inside (such as an
    input normalisation with its own checks) are leaves; containers are traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, BayesianLayer) or is_substitute(m):
            return True
        container = isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict)
        if not container and not any(isinstance(c, BayesianLayer) for c in m.modules()):
            return True
        return super().is_leaf_module(m, qualname)


def _step(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool]:
    """(whether `node` keeps units apart, whether it flattens)."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return isinstance(m, PASSTHROUGH), isinstance(m, nn.Flatten)
    if node.op == "call_function":
        return node.target in _FUNCTIONS, node.target in _FLATTEN
    if node.op == "call_method":
        return node.target in _METHODS, node.target in _FLATTEN
    return False, False


def _metadata(node: fx.Node) -> bool:
    """A read of a tensor's shape (`x.size(0)`, `x.shape`), not of its values."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)


def _follow(
    start: fx.Node, index: dict[str, int], modules: dict[str, nn.Module]
) -> tuple[list[tuple[int, bool]], bool]:
    """The Bayesian layers `start` feeds through passthrough nodes (with whether the path
    flattens), and whether it feeds anything else."""
    reached, escapes, stack = [], False, [(start, False)]
    while stack:
        node, flat = stack.pop()
        for user in node.users:
            if _metadata(user):
                continue
            first = user.args[0] if user.args else None
            if user.op == "call_module" and str(user.target) in index and first is node:
                reached.append((index[str(user.target)], flat))
                continue
            keeps, flattens = _step(user, modules)
            if keeps and first is node:
                stack.append((user, flat or flattens))
            else:
                escapes = True
    return reached, escapes


def layer_links(model: nn.Module, names: Sequence[str]) -> list[tuple[int, int, bool, bool]]:
    """`(source, target, flattened, only reader)` for each pair of Bayesian layers (indices
    into `names`) joined by passthrough operations; empty when `model` cannot be traced."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # any untraceable model: own masks only
        log.debug("masks of own groups only: the model cannot be traced (%s)", exc)
        return []
    index = {n: i for i, n in enumerate(names)}
    modules = dict(model.named_modules())
    links = []
    for node in graph.nodes:
        if node.op == "call_module" and str(node.target) in index:
            reached, escapes = _follow(node, index, modules)
            sole = not escapes and len(reached) == 1
            links += [(index[str(node.target)], j, flat, sole) for j, flat in reached]
    return links


def _link(
    a: BayesianLayer, b: BayesianLayer, ga: torch.Tensor, gb: torch.Tensor, flat: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask of b's inputs from a, mask of a's outputs from b), None where the rule is off."""
    if isinstance(a, Conv2dGroupNJ) and isinstance(b, Conv2dGroupNJ) and not flat:
        ok = b.groups == 1 and b.in_channels == a.out_channels
        return (ga if ok else None), None
    if isinstance(a, Conv2dGroupNJ) and isinstance(b, LinearGroupNJ) and flat:
        if b.in_features % a.out_channels:
            return None, None
        per_channel = gb.view(a.out_channels, -1)
        return ga.repeat_interleave(per_channel.shape[1]), per_channel.any(dim=1)
    if isinstance(a, LinearGroupNJ) and isinstance(b, LinearGroupNJ) and not flat:
        return None, (gb if b.in_features == a.out_features else None)
    return None, None


def weight_masks(
    model: nn.Module, named: Sequence[tuple[str, BayesianLayer]], groups: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Boolean masks of the kept weights, one per layer of `named` (shaped like its weights)."""
    layers = [m for _, m in named]
    rows, cols = [], []
    for layer, g in zip(layers, groups):
        w = layer.weight_mu
        ones_r = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        ones_c = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
        linear = isinstance(layer, LinearGroupNJ)
        rows.append(ones_r if linear else g.clone())
        cols.append(g.clone() if linear else ones_c)
    for i, j, flat, sole in layer_links(model, [n for n, _ in named]):
        into_b, out_of_a = _link(layers[i], layers[j], groups[i], groups[j], flat)
        if into_b is not None:
            cols[j] &= into_b
        if out_of_a is not None and sole:
            rows[i] &= out_of_a
    masks = []
    for layer, r, c in zip(layers, rows, cols):
        w = layer.weight_mu
        mask = r[:, None] & c[None, :]
        masks.append(mask.view(*mask.shape, *([1] * (w.dim() - 2))).expand_as(w))
    return masks
