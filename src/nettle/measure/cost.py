"""`count(model, input_shape)`: parameters and multiply-adds, per module and in total;
`measure_latency(model, input_shape, batch_sizes)`: the time of a forward pass.

How: one forward pass (eval mode, no grad) with hooks on every module.

- **Formulas own their subtree.** A module whose type has a formula (`register_formula`) is
  costed by it, once per call, and nothing inside it is costed again: neither its children
  (the `out_proj` Linear of a `MultiheadAttention`) nor the ops it runs. A formula for a
  container therefore replaces the costs of its children; leave a container without a formula
  to have its children counted one by one.
- **Dispatch fallback.** Multiply-add ops run by modules without a formula (a functional
  `F.conv2d`, `@`, `einsum`, `F.scaled_dot_product_attention` in a user's module) are counted
  by torch's `FlopCounterMode` and attributed to the innermost module that ran them
  (1 MAC = 2 FLOPs; theoretical = executed for these).
- **Nothing silently zero.** A heavy op without a flop formula (an FFT, the CPU LSTM kernel of
  an LSTM that had no formula) and a called module that holds parameters but was costed by
  neither are listed in `unsupported`.
- **Parameters that are only placed** (class tokens concatenated, position embeddings added,
  tables looked up) cost no multiply-adds: a module whose own parameters reach only data
  movement, indexing and additions is not reported. A parameter that also meets another op
  (`x * self.scale`), or no op the counter sees (a custom kernel), is.
- **Backward** (`backward=True`): the multiply-adds torch executes for the gradient of the sum
  of the outputs with respect to every parameter that requires grad (and every given input
  tensor that does), measured by `FlopCounterMode` over `torch.autograd.grad` (which leaves
  `.grad` untouched) after a second forward pass, with grad, in eval mode as the first. It
  is what executes (a substitute that rebuilds a dense kernel has a dense backward), in
  total, not per module. Not the 2x-forward rule: a first layer whose input needs no
  gradient costs one product, not two (a `Linear(4, 3)`: 12 forward, 12 backward; 24 when
  the input requires grad). Heavy backward ops without a flop formula are listed in
  `unsupported` as "in backward".
- **Per example.** Counts are those of the whole batch divided by the batch size.
- **Shared modules** cost once per call; their parameters count once.

The pass also runs on the meta device (`count(model.to("meta"), shape)`): no arithmetic is
done and the formulas give the same counts, which makes big models cheap to count.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import (
    FlopCounterMode,
    bmm_flop,
    mm_flop,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from nettle.measure import builtin_formulas as _builtin  # noqa: F401  (registers formulas)
from nettle.measure.conventions import Convention, get_convention
from nettle.measure.formulas import OpCount, get_formula
from nettle.measure.inputs import Shapes, forward_kwargs_on, make_inputs, placement
from nettle.measure.report import CostReport, ModuleCost, aggregate_modules, format_cost
from nettle.plugins import PLUGIN_GROUPS, load_plugins

__all__ = ["CostReport", "ModuleCost", "aggregate_modules", "count", "format_cost"]

# aten ops doing multiply-adds, matched on whole "_"-separated words of the op name
_HEAVY = re.compile(
    r"(?:^|_)(?:conv(?:olution|\d+d)?|[a-z]*mm|matmul|linear|einsum|rnn|lstm|gru|attention|fft"
    r"|transformer)(?:_|$)"
)


def _gemm(c: Any, a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of c + a @ b (the addition is not counted), batched or not."""
    return bmm_flop(a, b) if len(a) == 3 else mm_flop(a, b)


# flop formulas torch lacks: the CPU flash-attention kernel, fused and in-place GEMMs
_EXTRA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda dout, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(
            dout, q, k, v
        )
    ),
    torch.ops.aten._addmm_activation: _gemm,
    torch.ops.aten.addmm_: _gemm,
    torch.ops.aten.baddbmm_: _gemm,
    torch.ops.aten.addbmm: _gemm,
    torch.ops.aten.addbmm_: _gemm,
}
_OWNED = object()  # marks code running inside a module costed by its formula
# ops that reshape or copy a tensor: what they make of a parameter is followed further
_VIEWS = frozenset(
    {
        *("expand", "repeat", "view", "_unsafe_view", "reshape", "flatten", "squeeze"),
        *("unsqueeze", "permute", "transpose", "t", "alias", "detach", "clone", "_to_copy"),
        *("slice", "select", "narrow", "split", "split_with_sizes", "unbind"),
    }
)
# ops that put a parameter among activations without multiplying it (tokens, tables, biases)
_PLACES = frozenset(
    {"cat", "stack", "copy_", "embedding", "index", "index_select", "add", "add_", "sub", "rsub"}
)


def _shape(x: Any) -> list[int] | None:
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return list(x[0].shape)
    data = getattr(x, "data", None)  # PackedSequence
    return list(data.shape) if isinstance(data, torch.Tensor) else None


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, ...]:
    """Positional inputs of a call, with keyword arguments put in their places."""
    if not kwargs:
        return args
    try:
        return tuple(inspect.signature(module.forward).bind(*args, **kwargs).arguments.values())
    except TypeError:
        return args + tuple(kwargs.values())


def _tensors(values: Any) -> list[torch.Tensor]:
    """The tensors among `values`, looking one level into lists and tuples."""
    out = []
    for v in values if isinstance(values, (list, tuple)) else (values,):
        out += [
            t for t in (v if isinstance(v, (list, tuple)) else (v,)) if isinstance(t, torch.Tensor)
        ]
    return out


class _ParameterUse:
    """Which ops the parameters, and the views and copies made of them, meet in a pass."""

    def __init__(self, model: nn.Module) -> None:
        # id of a parameter or of a tensor made of it -> (that tensor, kept alive; parameter id)
        self.origin: dict[int, tuple[torch.Tensor, int]] = {
            id(p): (p, id(p)) for p in model.parameters()
        }
        self.placed: set[int] = set()  # parameters met by `_PLACES` ops
        self.used: set[int] = set()  # parameters met by any other op

    def meet(self, name: str, args: Any, out: Any) -> None:
        met = {self.origin[id(t)][1] for t in _tensors(args) if id(t) in self.origin}
        if not met:
            return
        if name in _VIEWS:
            self.origin.update({id(t): (t, min(met)) for t in _tensors(out)})
        else:
            (self.placed if name in _PLACES else self.used).update(met)

    def only_placed(self, module: nn.Module) -> bool:
        """Whether each parameter `module` holds itself was placed and met no other op."""
        ids = {id(p) for p in module.parameters(recurse=False)}
        return ids <= self.placed and not ids & self.used


class _Pass:
    """Hook state of one counting pass: who runs, what formulas say, where ops belong."""

    def __init__(self, model: nn.Module, rule: Convention) -> None:
        self.names = {m: name for name, m in model.named_modules()}
        self.rule = rule
        self.where: list[Any] = [""]  # innermost running module outside owned subtrees
        self.depth = 0  # nesting depth inside the current formula-owned call
        self.calls: Counter[str] = Counter()  # calls outside formula-owned subtrees
        self.shapes: dict[str, tuple[list[int] | None, list[int] | None]] = {}
        self.costs: dict[str, list[int]] = {}  # formula rows: [macs, executed]
        self.flops: Counter[str] = Counter()  # dispatch-counted FLOPs per module
        self.ops: set[str] = set()  # heavy ops without a flop formula
        self.uses = _ParameterUse(model)

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.depth > 0:  # inside a formula-owned call: nothing here is costed again
            self.depth += 1
            self.where.append(_OWNED)
            return
        name = self.names[module]
        self.calls[name] += 1
        self.depth = 1 if get_formula(module) is not None else 0
        self.where.append(_OWNED if self.depth else name)

    def post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.where.pop()
        if self.depth > 1:
            self.depth -= 1
            return
        name = self.names[module]
        self.shapes.setdefault(name, (_shape(args[0] if args else None), _shape(output)))
        if self.depth == 1:  # the owner's call ends: apply its formula
            self.depth = 0
            cost: OpCount = get_formula(module)(module, _bind(module, args, kwargs), output)
            row = self.costs.setdefault(name, [0, 0])
            row[0] += self.rule(module, cost)
            row[1] += cost.executed

    def op(self, name: str, flops: int | None) -> None:
        """An executed aten op: its FLOPs (None: no formula) go to the running module."""
        where = self.where[-1]
        if where is _OWNED:
            return
        if flops is not None:
            self.flops[where] += flops
        elif _HEAVY.search(name):
            self.ops.add(f"aten.{name} in {where or '(model)'}")


class _AttributingFlopCounter(FlopCounterMode):
    """`FlopCounterMode` whose counts go to the running module of a `_Pass`."""

    def __init__(self, state: _Pass) -> None:
        super().__init__(display=False, custom_mapping=_EXTRA_FLOPS)
        self.state = state

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        # overrides FlopCounterMode's per-op hook (private in torch 2.x; tests pin it down)
        name = getattr(func_packet, "__name__", str(func_packet))
        self.state.uses.meet(name, args, out)
        if self.state.where[-1] is _OWNED:
            return out
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            self.state.op(name, int(flops))
        else:
            self.state.op(name, None)
        return out


class _BackwardCounter(FlopCounterMode):
    """`FlopCounterMode` summing FLOPs and naming heavy ops it has no formula for."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=_EXTRA_FLOPS)
        self.flops = 0
        self.ops: set[str] = set()

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        name = getattr(func_packet, "__name__", str(func_packet))
        if func_packet in self.flop_registry:
            self.flops += int(self.flop_registry[func_packet](*args, **kwargs, out_val=out))
        elif _HEAVY.search(name):
            self.ops.add(f"aten.{name} in backward")
        return out


def _backward_flops(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], kwargs: dict[str, Any]
) -> tuple[int, list[str]]:
    """FLOPs of the gradient of the sum of the outputs (parameters and inputs that need it)."""
    with torch.enable_grad():
        out = model(*inputs, **kwargs)
        leaves = [
            t
            for t in tree_leaves(out)
            if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()
        ]
        given = [*inputs, *kwargs.values()]
        wrt = [p for p in model.parameters() if p.requires_grad]
        wrt += [t for t in given if isinstance(t, torch.Tensor) and t.requires_grad]
        if not leaves or not wrt:
            return 0, []
        loss = torch.stack([t.sum() for t in leaves]).sum()
        with _BackwardCounter() as counter:
            torch.autograd.grad(loss, wrt, allow_unused=True)
    return counter.flops, sorted(counter.ops)


def count(
    model: nn.Module,
    input_shape: Shapes,
    convention: str = "default",
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
    backward: bool = False,
    forward_kwargs: dict[str, Any] | None = None,
) -> CostReport:
    """Count parameters and multiply-adds of `model` for inputs of `input_shape`, per example.

    Args:
        model: any module; each submodule's train/eval mode is restored afterwards.
        input_shape: one shape without the batch dim, e.g. (3, 32, 32), a list of shapes for
            several inputs, or example tensors (used as they are, batch dim included).
        convention: a name from `list_conventions()`.
        device: where to run the pass; the model must already be there (default: its device).
        batch_size: the batch of the pass, and what counts are divided by (with example
            tensors, give their batch size to get per-example counts).
        dtype: dtype of the made inputs (default: the model's floating dtype).
        backward: also measure the backward pass (`CostReport.backward_macs`).
        forward_kwargs: keyword arguments of the model's forward (masks, lengths, ...);
            tensors are moved to `device`, other values passed as they are.

    Example:
        >>> count(nn.Conv2d(3, 8, 3, padding=1), (3, 32, 32)).macs
        221184
        >>> count(nn.Linear(4, 3), (4,), backward=True).backward_macs
        12
    """
    if batch_size < 1:
        raise ValueError(f"count: batch_size must be positive, got {batch_size}")
    load_plugins(PLUGIN_GROUPS["formula"])
    rule = get_convention(convention)
    dev, dt = placement(model, device, dtype)
    inputs = make_inputs(input_shape, batch_size, dev, dt)
    kwargs = forward_kwargs_on(dev, forward_kwargs)
    state = _Pass(model, rule)
    back = _run(model, state, inputs, kwargs, backward)
    report = _report(model, state, convention, inputs, batch_size)
    if back is not None:
        report.backward_macs = back[0] // 2 // batch_size
        report.unsupported += back[1]
    return report


def _run(
    model: nn.Module,
    state: _Pass,
    inputs: tuple[torch.Tensor, ...],
    kwargs: dict[str, Any],
    backward: bool,
) -> tuple[int, list[str]] | None:
    """The hooked forward pass in eval mode, then the backward one if asked; modes restored."""
    handles = [m.register_forward_pre_hook(state.pre, with_kwargs=True) for m in state.names]
    handles += [m.register_forward_hook(state.post, with_kwargs=True) for m in state.names]
    modes = {m: m.training for m in state.names}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # fused paths would skip child modules
    model.eval()
    try:
        with torch.no_grad(), _AttributingFlopCounter(state):
            model(*inputs, **kwargs)
        for h in handles:  # the backward pass runs the forward again, unhooked
            h.remove()
        return _backward_flops(model, inputs, kwargs) if backward else None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training


def _report(
    model: nn.Module,
    state: _Pass,
    convention: str,
    inputs: tuple[torch.Tensor, ...],
    n: int,
) -> CostReport:
    rows, unsupported = [], sorted(state.ops)
    macs = executed = 0
    for module, name in state.names.items():
        if name not in state.calls:
            continue
        if name in state.costs:
            m, e = state.costs[name]
            params, source = sum(q.numel() for q in module.parameters()), "formula"
        elif state.flops[name] > 0:
            m = e = state.flops[name] // 2
            params, source = sum(q.numel() for q in module.parameters(recurse=False)), "dispatch"
        else:
            held = sum(q.numel() for q in module.parameters(recurse=False))
            if held and not state.uses.only_placed(module):
                unsupported.append(
                    f"{type(module).__name__} at {name or '(model)'}: no cost formula and no "
                    f"counted ops for its {held} parameters"
                )
            continue
        macs, executed = macs + m, executed + e
        shape_in, shape_out = state.shapes.get(name, (None, None))
        rows.append(
            ModuleCost(
                name,
                type(module).__name__,
                params,
                m // n,
                e // n,
                state.calls[name],
                shape_in,
                shape_out,
                source,
            )
        )
    return CostReport(
        model=type(model).__name__,
        params=sum(q.numel() for q in model.parameters()),
        trainable_params=sum(q.numel() for q in model.parameters() if q.requires_grad),
        macs=macs // n,
        macs_executed=executed // n,
        convention=convention,
        input_shape=list(inputs[0].shape[1:]),
        modules=rows,
        unsupported=unsupported,
    )
