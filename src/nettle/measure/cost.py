"""`count(model, input_shape)`: parameters and multiply-adds, per module and in total.

How: one forward pass (eval mode, no grad) with hooks on every module. A module whose type has
a formula (`register_formula`) is costed by it and owns its whole subtree (its children are not
costed again). Operations executed inside modules without a formula (a functional `F.conv2d`,
`@`, `einsum` in a user's module) are caught at the dispatch level by torch's
`FlopCounterMode` and attributed to the innermost module that ran them (1 MAC = 2 FLOPs).
Anything neither knows (a parameterised leaf module without a formula and no counted ops, a
heavy op without a flop formula such as the CPU LSTM kernel) is listed in `unsupported`,
never silently zero. Counts are per example: whole-batch counts divided by the batch size.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from nettle.measure import builtin_formulas as _builtin  # noqa: F401  (registers formulas)
from nettle.measure.conventions import get_convention
from nettle.measure.formulas import OpCount, get_formula

__all__ = ["CostReport", "ModuleCost", "count", "format_cost"]

# aten ops that do real arithmetic; one without a flop formula is reported as unsupported
_HEAVY = ("conv", "mm", "matmul", "linear", "einsum", "rnn", "lstm", "gru", "attention", "fft")


@dataclass
class ModuleCost:
    """The cost of one module (per example); `calls` counts its forward calls."""

    name: str
    type: str
    params: int
    macs: int
    macs_executed: int
    calls: int = 0
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    source: str = "formula"  # or "dispatch" (FlopCounterMode fallback)


@dataclass
class CostReport:
    """What `count` measured. `macs` are theoretical, under `convention`."""

    params: int
    trainable_params: int
    macs: int
    macs_executed: int
    convention: str
    input_shape: list[int]
    modules: list[ModuleCost] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data."""
        return asdict(self)


class _HeavyOpLog(TorchDispatchMode):
    """Records heavy aten ops that have no flop formula, with the module running them."""

    def __init__(self, where: list[str]) -> None:
        super().__init__()
        self.where, self.seen = where, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        name = packet.__name__
        if (
            packet not in flop_registry
            and any(h in name for h in _HEAVY)
            and self.where[-1] != "<owned>"
        ):
            self.seen.append(f"aten.{name} in {self.where[-1] or '(model)'}")
        return func(*args, **(kwargs or {}))


def _shape(x: Any) -> list[int] | None:
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return list(x[0].shape)
    return None


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, ...]:
    if not kwargs:
        return args
    try:
        return tuple(inspect.signature(module.forward).bind(*args, **kwargs).arguments.values())
    except TypeError:
        return args + tuple(kwargs.values())


def _make_inputs(
    input_shape: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | Sequence[torch.Tensor],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[tuple[torch.Tensor, ...], int]:
    """The example inputs and the batch size the counts are divided by."""
    if isinstance(input_shape, torch.Tensor):
        return (input_shape.to(device),), batch_size
    items = list(input_shape)
    if items and isinstance(items[0], torch.Tensor):
        return tuple(t.to(device) for t in items), batch_size
    shapes = items if items and isinstance(items[0], (tuple, list)) else [items]
    g = torch.Generator().manual_seed(0)
    made = tuple(
        torch.rand((batch_size, *map(int, s)), generator=g, dtype=dtype).to(device) for s in shapes
    )
    return made, batch_size


def count(
    model: nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | Sequence[torch.Tensor],
    convention: str = "default",
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
) -> CostReport:
    """Count parameters and multiply-adds of `model` for inputs of `input_shape`.

    Args:
        model: any module; its mode is restored afterwards.
        input_shape: one shape without the batch dim, e.g. (3, 32, 32), a list of shapes for
            several inputs, or example tensors (used as they are).
        convention: a name from `list_conventions()`.
        device: where to run the pass (default: the model's).
        batch_size: the batch of the pass, and what counts are divided by (with example
            tensors, give their batch size to get per-example counts).
        dtype: input dtype (default: torch's default dtype).
    """
    rule = get_convention(convention)
    p = next(model.parameters(), None)
    dev = (
        torch.device(device)
        if device is not None
        else (p.device if p is not None else torch.device("cpu"))
    )
    inputs, n = _make_inputs(input_shape, batch_size, dev, dtype or torch.get_default_dtype())
    names = {m: name for name, m in model.named_modules()}
    rows: dict[str, ModuleCost] = {}
    where: list[str] = [""]
    owned_depth = [0]
    called: set[str] = set()
    inside: set[str] = set()  # modules run inside a formula-owned module
    handles = []

    def pre_hook(module, args, kwargs):
        name = names.get(module, "?")
        called.add(name)
        if owned_depth[0] > 0:
            inside.add(name)
        if owned_depth[0] == 0 and get_formula(module) is not None:
            owned_depth[0] += 1
            module._nettle_owner = True
            where.append("<owned>")
        elif owned_depth[0] > 0:
            owned_depth[0] += 1
            module._nettle_owner = False
            where.append("<owned>")
        else:
            module._nettle_owner = False
            where.append(name)

    def post_hook(module, args, kwargs, output):
        where.pop()
        if owned_depth[0] == 0:
            return
        owned_depth[0] -= 1
        if not getattr(module, "_nettle_owner", False):
            return
        cost: OpCount = get_formula(module)(module, _bind(module, args, kwargs), output)
        name = names.get(module, "?")
        row = rows.get(name)
        if row is None:
            subtree = sum(q.numel() for q in module.parameters())
            row = rows[name] = ModuleCost(
                name,
                type(module).__name__,
                subtree,
                0,
                0,
                0,
                _shape(args[0] if args else None),
                _shape(output),
            )
        row.macs += rule(module, cost)
        row.macs_executed += cost.executed
        row.calls += 1

    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    log = _HeavyOpLog(where)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fcm, log:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for module in names:
            module.__dict__.pop("_nettle_owner", None)
        model.train(was_training)
    skip = set(rows) | inside
    dispatched = _dispatch_rows(model, fcm.get_flop_counts(), called, skip)
    rows.update(dispatched)
    unsupported = sorted(set(log.seen)) + _silent_modules(model, called, skip, dispatched)
    return _report(model, list(rows.values()), unsupported, convention, inputs, n)


def _dispatch_rows(
    model: nn.Module, flops: dict[str, dict[Any, int]], called: set[str], skip: set[str]
) -> dict[str, ModuleCost]:
    """MACs that `FlopCounterMode` saw in modules without a formula, each module's own share."""
    root = type(model).__name__

    def total(name: str) -> int:
        return sum(flops.get(f"{root}.{name}" if name else root, {}).values())

    def called_below(name: str, module: nn.Module) -> list[str]:
        """The nearest called descendants (looking through containers never called)."""
        out = []
        for child, sub in module.named_children():
            full = f"{name}.{child}" if name else child
            out += [full] if full in called else called_below(full, sub)
        return out

    rows = {}
    for name, module in model.named_modules():
        if name not in called or name in skip:
            continue
        own = total(name) - sum(total(child) for child in called_below(name, module))
        if own > 0:
            params = sum(q.numel() for q in module.parameters(recurse=False))
            rows[name] = ModuleCost(
                name, type(module).__name__, params, own // 2, own // 2, 1, source="dispatch"
            )
    return rows


def _silent_modules(
    model: nn.Module, called: set[str], skip: set[str], dispatched: dict[str, ModuleCost]
) -> list[str]:
    """Called modules holding parameters that neither a formula nor the dispatcher costed."""
    out = []
    for name, module in model.named_modules():
        if name in called and name not in skip and name not in dispatched:
            held = sum(q.numel() for q in module.parameters(recurse=False))
            if held:
                out.append(
                    f"{type(module).__name__} at {name or '(model)'}: no cost formula and no "
                    f"counted ops for its {held} parameters"
                )
    return out


def _report(
    model: nn.Module,
    rows: list[ModuleCost],
    unsupported: list[str],
    convention: str,
    inputs: tuple[torch.Tensor, ...],
    n: int,
) -> CostReport:
    for r in rows:
        r.macs //= n
        r.macs_executed //= n
    return CostReport(
        params=sum(q.numel() for q in model.parameters()),
        trainable_params=sum(q.numel() for q in model.parameters() if q.requires_grad),
        macs=sum(r.macs for r in rows),
        macs_executed=sum(r.macs_executed for r in rows),
        convention=convention,
        input_shape=list(inputs[0].shape[1:]),
        modules=rows,
        unsupported=unsupported,
    )


def format_cost(report: CostReport, depth: int | None = None) -> str:
    """A plain-text table of the module rows (aggregated to `depth` name parts) and totals."""
    agg: dict[str, list[int]] = {}
    for r in report.modules:
        key = ".".join(r.name.split(".")[:depth]) if depth and r.name else (r.name or "(model)")
        row = agg.setdefault(key, [0, 0, 0])
        row[0] += r.params
        row[1] += r.macs
        row[2] += r.macs_executed
    width = max([len(k) for k in agg] + [6])
    lines = [f"{'module':<{width}} {'params':>14} {'MACs':>16} {'MACs executed':>16}"]
    for key, (params, macs, execd) in agg.items():
        lines.append(f"{key:<{width}} {params:>14,} {macs:>16,} {execd:>16,}")
    lines.append(
        f"{'total':<{width}} {report.params:>14,} {report.macs:>16,} {report.macs_executed:>16,}"
    )
    for u in report.unsupported:
        lines.append(f"unsupported: {u}")
    return "\n".join(lines)
