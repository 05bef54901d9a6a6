"""Receptive fields traced back through the layers, and the input patches behind activations.

The tracer learns the graph with `torch.fx` symbolic tracing, so residual adds, concatenations
along channels and functional calls (`F.relu`, `F.max_pool2d`) are seen as they are. It walks
the graph backwards from the chosen activation and keeps, per spatial dimension, the exact set
of indices the activation depends on, with the per-layer rules of `nettle.inspect.fields`; a
node that feeds several branches gets their union. The rectangle is the bounding box of the
final sets, so it is tight at every stage (no growth from padding or dilation holes).

Known: ConvNd (zeros padding), Max/AvgPoolNd, zero/constant padding, BatchNorm (eval mode),
activations, dropout, identity, nettle's Normalize/ReLog/Maxout, pointwise functions and
methods, `torch.cat` over channels. Any other module is traced through its own `forward`; a
built-in module without a rule (Linear, adaptive pooling, upsampling, normalisation over space)
or a forward torch.fx cannot trace raises `UntraceableError` naming the layer. Add rules with
`register_receptive_field`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from nettle.inspect.activations import eval_mode, get_layers, model_device
from nettle.inspect.fields import (
    Rect,
    Sets,
    UntraceableError,
    is_pool_function,
    pointwise_function,
    pointwise_method,
    pool_function_back,
    register_pointwise,
    register_receptive_field,
    rule_for,
)

__all__ = [
    "FieldTracer",
    "Rect",
    "UntraceableError",
    "get_item",
    "receptive_field",
    "register_pointwise",
    "register_receptive_field",
]


class _Tracer(fx.Tracer):
    """Keeps the named layers and every module with a rule as leaves of the graph."""

    def __init__(self, leaves: Sequence[str] = ()) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            qualname in self.leaves
            or rule_for(m) is not None
            or super().is_leaf_module(m, qualname)
        )


def _trace(module: nn.Module, name: str, leaves: Sequence[str] = ()) -> fx.GraphModule:
    try:
        tracer = _Tracer(leaves)
        graph = tracer.trace(module)
    except Exception as e:  # fx raises several kinds on data-dependent code
        what = f"layer {name!r}" if name else "the model"
        msg = f"cannot trace {what} ({type(module).__name__}) with torch.fx: {e}"
        raise UntraceableError(msg.splitlines()[0]) from None
    return fx.GraphModule(module, graph)


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise UntraceableError(f"node {node.name!r} does not produce one tensor")
    return tuple(meta.shape)


def _where(node: fx.Node, prefix: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    inner = next(reversed(stack.values()))[0] if stack else ""
    name = (prefix + str(inner)).strip(".")
    return f"layer {name!r}" if name else "the model"


def _node_back(
    gm: fx.GraphModule, prefix: str, node: fx.Node, sets: Sets, dep: set, cache: dict
) -> list:
    """(argument node, its sets) pairs for the input-dependent tensor arguments of `node`."""
    args = [a for a in node.all_input_nodes if a in dep]
    if node.op == "call_module":
        name = f"{prefix}{node.target}"
        if len(args) != 1:
            raise UntraceableError(f"layer {name!r} takes {len(args)} input-dependent tensors")
        module = gm.get_submodule(node.target)
        return [(args[0], _module_back(module, name, sets, _shape(args[0]), cache))]
    out_shape = _shape(node)
    target = node.target
    if node.op == "call_function" and is_pool_function(target):
        return [(args[0], pool_function_back(node, sets, _shape(args[0])))]
    cat = node.op == "call_function" and target is torch.cat
    if cat and (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) in (1, -3):
        return [(a, [set(s) for s in sets]) for a in args]
    pointwise = (node.op == "call_function" and pointwise_function(target)) or (
        node.op == "call_method" and pointwise_method(target)
    )
    if not pointwise:
        label = getattr(target, "__name__", str(target))
        raise UntraceableError(f"cannot trace through {label!r} in {_where(node, prefix)}")
    out = []
    for a in args:
        shape = _shape(a)
        if len(shape) != len(out_shape):
            raise UntraceableError(f"broadcast of {a.name!r} in {_where(node, prefix)}")
        sizes = zip(shape[2:], out_shape[2:])
        out.append((a, [S if n == m else {0} for S, (n, m) in zip(sets, sizes)]))
    return out


def _back_graph(gm: fx.GraphModule, prefix: str, start: fx.Node, sets: Sets, cache: dict) -> Sets:
    """Propagate `sets` from `start` back to the graph's input (empty sets: no dependence)."""
    nodes = list(gm.graph.nodes)
    dep: set[fx.Node] = set()
    for node in nodes:
        if (node.op == "placeholder" and not dep) or any(a in dep for a in node.all_input_nodes):
            dep.add(node)
    pending = {start: sets}
    for node in reversed(nodes[: nodes.index(start) + 1]):
        cur = pending.pop(node, None)
        if cur is None or not all(cur):
            continue
        if node.op == "placeholder":
            return cur
        for arg, arg_sets in _node_back(gm, prefix, node, cur, dep, cache):
            if arg in pending:
                arg_sets = [a | b for a, b in zip(pending[arg], arg_sets)]
            pending[arg] = arg_sets
    return [set() for _ in sets]


def _module_back(
    module: nn.Module, name: str, sets: Sets, in_shape: Sequence[int], cache: dict
) -> Sets:
    rule = rule_for(module)
    if rule is not None:
        try:
            return rule(module, sets, in_shape)
        except UntraceableError as e:
            raise UntraceableError(f"cannot trace through layer {name!r}: {e}") from None
    builtin = type(module).__module__.startswith("torch.")
    if builtin and not isinstance(module, nn.Sequential):
        raise UntraceableError(
            f"cannot trace through layer {name!r} ({type(module).__name__}): "
            "its output position does not map to an input rectangle"
        )
    key = (name, tuple(in_shape))
    if key not in cache:
        gm = _trace(module, name)
        ShapeProp(gm).propagate(torch.zeros(in_shape, **_like(module)))
        (output,) = [n for n in gm.graph.nodes if n.op == "output"]
        if not isinstance(output.args[0], fx.Node):
            raise UntraceableError(f"layer {name!r} does not return one tensor")
        cache[key] = (gm, output.args[0])
    gm, result = cache[key]
    return _back_graph(gm, f"{name}.", result, sets, cache)


def _like(module: nn.Module) -> dict[str, Any]:
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {"device": model_device(module)}


class FieldTracer:
    """Receptive fields of a model's layers for inputs of one shape (graphs cached per layer).

    Args:
        model: the network; it is traced, never edited (shapes come from one dummy forward in
            eval mode under no_grad).
        input_size: the shape of one input, channels first, e.g. `(3, 32, 32)` or `(1, 100)`.

    A module called more than once (a shared ReLU) is traced at its first call, the call whose
    output `nettle.inspect.capture` records.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int]) -> None:
        self.model = model
        self.input_size = tuple(input_size)
        self._graphs: dict[str, tuple[fx.GraphModule, fx.Node]] = {}
        self._cache: dict = {}  # traced inner modules by (name, input shape)

    def _graph(self, layer: str) -> tuple[fx.GraphModule, fx.Node]:
        if layer not in self._graphs:
            get_layers(self.model, [layer])
            gm = _trace(self.model, "", leaves=[layer])
            nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
            if not nodes:
                raise UntraceableError(f"layer {layer!r} is not called in the forward pass")
            dummy = torch.zeros((1, *self.input_size), **_like(self.model))
            try:
                with eval_mode(self.model), torch.no_grad():
                    ShapeProp(gm).propagate(dummy)
            except RuntimeError as e:
                cause = str(e.__cause__ or e).splitlines()[0]
                msg = f"the model fails on inputs of size {self.input_size}: {cause}"
                raise ValueError(msg) from None
            self._graphs[layer] = (gm, nodes[0])
        return self._graphs[layer]

    def output_shape(self, layer: str) -> tuple[int, ...]:
        """The layer's output shape for one input (batch dimension 1 included)."""
        return _shape(self._graph(layer)[1])

    def sets(self, layer: str, position: Sequence[int]) -> Sets:
        """Per input dimension, the exact indices the activation at `position` depends on."""
        gm, node = self._graph(layer)
        spatial = _shape(node)[2:]
        if not spatial:
            kind = type(self.model.get_submodule(layer)).__name__
            raise UntraceableError(f"layer {layer!r} ({kind}) has no spatial output to trace")
        if len(position) != len(spatial) or not all(0 <= p < n for p, n in zip(position, spatial)):
            raise ValueError(
                f"position {tuple(position)} is outside layer {layer!r}'s map {tuple(spatial)}"
            )
        with eval_mode(self.model), torch.no_grad():
            return _back_graph(gm, "", node, [{int(p)} for p in position], self._cache)

    def rect(self, layer: str, position: Sequence[int]) -> Rect:
        """The bounding rectangle (an empty one if no input pixel matters) of `sets`."""
        sets = self.sets(layer, position)
        if not all(sets):
            return Rect(0, 0, 0, 0)
        spans = [(min(s), max(s) + 1) for s in sets]
        if len(spans) == 1:
            spans = [(0, 1), *spans]
        (top, bottom), (left, right) = spans[-2], spans[-1]
        return Rect(top, left, bottom, right)


def receptive_field(
    model: nn.Module, layer: str, y: int, x: int, input_size: Sequence[int]
) -> Rect:
    """The exact input rectangle behind the activation of `layer` at `(y, x)`, clipped.

    For 1-D layers pass `y=0`; the rectangle then has rows 0:1. Raises `UntraceableError`
    naming the layer that has no rectangular receptive field.
    """
    tracer = FieldTracer(model, input_size)
    position = (x,) if len(tracer.output_shape(layer)) == 3 else (y, x)
    return tracer.rect(layer, position)


def get_item(data: Any, i: int) -> torch.Tensor:
    """Input `i` of a tensor, an `(x, y)` tuple, a `TensorDataset` or a dataset of pairs."""
    if isinstance(data, torch.Tensor):
        return data[i]
    if isinstance(data, tuple):
        return data[0][i]
    if hasattr(data, "tensors"):
        return data.tensors[0][i]
    item = data[i]
    return item[0] if isinstance(item, (list, tuple)) else item
