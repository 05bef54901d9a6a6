"""`count(model, input_shape)`: parameters and multiply-adds, per module and in total.

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
- **Per example.** Counts are those of the whole batch divided by the batch size.
- **Shared modules** cost once per call; their parameters count once.

The pass also runs on the meta device (`count(model.to("meta"), shape)`): no arithmetic is
done and the formulas give the same counts, which makes big models cheap to count.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, bmm_flop, mm_flop, sdpa_flop_count

from nettle.measure import builtin_formulas as _builtin  # noqa: F401  (registers formulas)
from nettle.measure.conventions import Convention, get_convention
from nettle.measure.formulas import OpCount, get_formula
from nettle.measure.report import CostReport, ModuleCost, aggregate_modules, format_cost

__all__ = ["CostReport", "ModuleCost", "aggregate_modules", "count", "format_cost"]

Shapes = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | Sequence[torch.Tensor]

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
    torch.ops.aten._addmm_activation: _gemm,
    torch.ops.aten.addmm_: _gemm,
    torch.ops.aten.baddbmm_: _gemm,
    torch.ops.aten.addbmm: _gemm,
    torch.ops.aten.addbmm_: _gemm,
}
_OWNED = object()  # marks code running inside a module costed by its formula


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
        if self.state.where[-1] is _OWNED:
            return out
        name = getattr(func_packet, "__name__", str(func_packet))
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            self.state.op(name, int(flops))
        else:
            self.state.op(name, None)
        return out


def _make_inputs(
    input_shape: Shapes, batch_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """Example inputs: given tensors moved to `device`, or uniform [0, 1) ones of each shape."""
    if isinstance(input_shape, torch.Tensor):
        return (input_shape.to(device),)
    items = list(input_shape)
    if items and isinstance(items[0], torch.Tensor):
        return tuple(t.to(device) for t in items)
    shapes = items if items and isinstance(items[0], (tuple, list, torch.Size)) else [items]
    g = torch.Generator().manual_seed(0)
    return tuple(
        torch.rand((batch_size, *map(int, s)), generator=g, dtype=dtype).to(device) for s in shapes
    )


def _placement(
    model: nn.Module, device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    tensors = list(model.parameters()) + list(model.buffers())
    devices = {t.device for t in tensors}
    dev = torch.device(device) if device is not None else next(iter(devices), torch.device("cpu"))
    if device is not None and devices and dev not in devices:
        raise ValueError(
            f"count: the model is on {', '.join(sorted(map(str, devices)))}, not on {dev}; "
            "move it first (model.to(device))"
        )
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    return dev, dtype or (floats[0] if floats else torch.get_default_dtype())


def count(
    model: nn.Module,
    input_shape: Shapes,
    convention: str = "default",
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
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

    Example:
        >>> count(nn.Conv2d(3, 8, 3, padding=1), (3, 32, 32)).macs
        221184
    """
    if batch_size < 1:
        raise ValueError(f"count: batch_size must be positive, got {batch_size}")
    rule = get_convention(convention)
    dev, dt = _placement(model, device, dtype)
    inputs = _make_inputs(input_shape, batch_size, dev, dt)
    state = _Pass(model, rule)
    handles = [m.register_forward_pre_hook(state.pre, with_kwargs=True) for m in state.names]
    handles += [m.register_forward_hook(state.post, with_kwargs=True) for m in state.names]
    modes = {m: m.training for m in state.names}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # fused paths would skip child modules
    model.eval()
    try:
        with torch.no_grad(), _AttributingFlopCounter(state):
            model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return _report(model, state, convention, inputs, batch_size)


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
            if held:
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
        params=sum(q.numel() for q in model.parameters()),
        trainable_params=sum(q.numel() for q in model.parameters() if q.requires_grad),
        macs=macs // n,
        macs_executed=executed // n,
        convention=convention,
        input_shape=list(inputs[0].shape[1:]),
        modules=rows,
        unsupported=unsupported,
    )
