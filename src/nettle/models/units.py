"""Logic-inspired units per layer of any network: the rules of `model.units`, by surgery.

Each rule (`nettle.config.UnitRule`) selects layers of one kind and puts a unit there:

- activations (`relu`, `relog`, `relog1p`) replace activation modules (`nn.ReLU`, `ReLog`,
  `ReLog1p`);
- folds (`maxout`, `minmaxout`, Goodfellow et al. 2013 and the research code's min-max-out)
  replace an activation module too, and widen the Conv2d/Linear layer that feeds it (and the
  BatchNorm between them) by the fold's group size, so every later layer sees the width it had.
  The feeding layer is found by tracing one forward pass: the activation's input must be the
  output of a plain Conv2d/Linear, directly or through one BatchNorm, used by nothing else (an
  activation after a residual sum is refused). The widened layer is drawn fresh,
  N(0, std of the weights it replaces), with zero bias;
- quadratic units (`quadratic`, `elliptical`, `spherical`; `nettle.nn.logic`) replace plain
  Conv2d (groups 1, dilation 1, zero padding) and Linear layers, keeping their weights.

Selection: `layers: all` (default) takes every layer of the rule's kind, in the order of
`model.named_modules()`; `last: k` the last k of them; `layers: [names]` the named ones, where
a container (e.g. `layer4`, `stage2`) stands for every layer of the kind inside it. Rules apply
in order: a later rule overrides an earlier one where both select a layer. A name that is not
in the model, or selects nothing of the kind, is a `ConfigError` of one line with the names
that would be accepted.

`model.activation: relog` is the shorthand of `units: [{unit: relog}]` (`unit_rules`); the
config refuses both at once. `add_sigmoid_output` makes a classifier output `sigmoid(logits)`
(`model.output: sigmoid`).

Example:
    >>> from nettle.config import UnitRule
    >>> rules = [UnitRule(unit="relog"), UnitRule(unit="maxout", k=2, last=1)]
    >>> report = apply_units(model, rules, torch.rand(2, 1, 8, 8))  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nettle.config import ConfigError, ModelConfig, UnitRule
from nettle.inspect.activations import eval_mode
from nettle.models.fold import feeding_layers, widen
from nettle.nn import logic

__all__ = [
    "ACTIVATION_TYPES",
    "UnitsReport",
    "activation_slots",
    "add_sigmoid_output",
    "apply_units",
    "layer_slots",
    "plan_units",
    "select_layers",
    "unit_rules",
]

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, logic.ReLog, logic.ReLog1p)
"""The activation modules that activation and fold rules select."""
_LAYER_UNITS = ("quadratic", "elliptical", "spherical")
_FOLDS = ("maxout", "minmaxout")


@dataclass
class UnitsReport:
    """What `apply_units` changed: layer name -> unit, and the layers it widened (factor)."""

    units: dict[str, str] = field(default_factory=dict)
    widened: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a run's summary."""
        return {"units": dict(self.units), "widened": dict(self.widened)}


def activation_slots(model: nn.Module) -> list[str]:
    """Names of the activation modules (ReLU, ReLog, ReLog1p) in `named_modules` order."""
    return [n for n, m in model.named_modules() if isinstance(m, ACTIVATION_TYPES)]


def layer_slots(model: nn.Module) -> list[str]:
    """Names of the plain `nn.Conv2d` and `nn.Linear` layers (not substitutes or subclasses)."""
    return [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def _kind(unit: str) -> str:
    return "Conv2d/Linear layer" if unit in _LAYER_UNITS else "activation (ReLU, ReLog, ReLog1p)"


def select_layers(model: nn.Module, rule: UnitRule, where: str = "model.units[0]") -> list[str]:
    """The names `rule` selects in `model` (see the module docstring).

    Raises:
        ConfigError: an unknown name (with close ones), a name that holds nothing of the
            rule's kind, or `last` beyond the number of such layers; `where` names the rule.
    """
    slots = layer_slots(model) if rule.unit in _LAYER_UNITS else activation_slots(model)
    if not slots and rule.layers == "all" and rule.last is None:
        return []  # all of none (e.g. model.activation on a model folded by model.maxout)
    if not slots:
        raise ConfigError(f"{where}: the model has no {_kind(rule.unit)} for unit {rule.unit}")
    if rule.layers == "all":
        if rule.last is not None and rule.last > len(slots):
            raise ConfigError(
                f"{where}: last: {rule.last}, but the model has {len(slots)} "
                f"{_kind(rule.unit)} layers"
            )
        return slots[-rule.last :] if rule.last else list(slots)
    modules = dict(model.named_modules())
    chosen: list[str] = []
    for name in rule.layers:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, slots, n=3, cutoff=0.5)
            close = close or difflib.get_close_matches(name, [n for n in modules if n], 3, 0.5)
            hint = ", ".join(close) if close else ", ".join(slots[:6]) + ", ..." * (len(slots) > 6)
            raise ConfigError(f"{where}: no layer named {name!r} in the model; known: {hint}")
        inside = [s for s in slots if s == name or s.startswith(name + ".")]
        if not inside:
            raise ConfigError(
                f"{where}: {name!r} holds no {_kind(rule.unit)} for unit {rule.unit}; "
                f"such layers are e.g. {', '.join(slots[:4])}"
            )
        chosen += [s for s in inside if s not in chosen]
    return chosen


def plan_units(model: nn.Module, rules: Sequence[UnitRule]) -> dict[str, UnitRule]:
    """Layer name -> the rule that decides its unit (the last rule selecting it wins)."""
    plan: dict[str, UnitRule] = {}
    for i, rule in enumerate(rules):
        for name in select_layers(model, rule, f"model.units[{i}]"):
            plan[name] = rule
    return plan


def _activation(rule: UnitRule) -> nn.Module:
    if rule.unit == "relu":
        return nn.ReLU()
    if rule.unit == "relog":
        defaults = logic.ReLog()
        return logic.ReLog(
            rule.b or defaults.base,
            rule.eps or defaults.eps,
            defaults.offset if rule.c is None else rule.c,
        )
    if rule.unit == "relog1p":
        kw = {"beta": rule.beta, "step": rule.step}
        return logic.ReLog1p(**{k: v for k, v in kw.items() if v is not None})
    if rule.unit == "maxout":
        return logic.Maxout(rule.k or 4, rule.mode or "max")
    return logic.MinMaxOut(rule.k or 4, rule.k_min or 2)


def _fold_factor(rule: UnitRule) -> int:
    return (rule.k or 4) * ((rule.k_min or 2) if rule.unit == "minmaxout" else 1)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _quadratic(layer: nn.Module, unit: str, rule: UnitRule, where: str) -> nn.Module:
    """A quadratic/elliptical/spherical copy of a plain Conv2d or Linear (same weights)."""
    kw: dict[str, Any] = {} if rule.step is None else {"step": rule.step}
    dd = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        cls = {"quadratic": logic.QuadraticLinear, "elliptical": logic.EllipticalLinear}
        make = cls.get(unit, logic.SphericalLinear)
        new = make(layer.in_features, layer.out_features, bias, **kw, **dd)
    else:
        plain = layer.groups == 1 and layer.dilation == (1, 1) and layer.padding_mode == "zeros"
        if not plain or isinstance(layer.padding, str):
            raise ConfigError(
                f"{where}: unit {unit} takes convolutions with groups 1, dilation 1 and numeric "
                f"zero padding; {layer} is not one"
            )
        cls = {"quadratic": logic.QuadraticConv2d, "elliptical": logic.EllipticalConv2d}
        make = cls.get(unit, logic.SphericalConv2d)
        args = (layer.in_channels, layer.out_channels, layer.kernel_size)
        new = make(*args, layer.stride, layer.padding, bias, **kw, **dd)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if bias:
            new.bias.copy_(layer.bias)
    return new.train(layer.training)


def apply_units(
    model: nn.Module, rules: Sequence[UnitRule], example: torch.Tensor | None = None
) -> UnitsReport:
    """Put the units of `rules` into `model` in place; `example` (a small input batch) is
    needed by fold rules, to find the layer feeding each activation and to check the result.

    Raises:
        ConfigError: a selection `select_layers` refuses, a fold whose activation is not fed
            by a plain Conv2d/Linear (through at most one BatchNorm), a conv a quadratic unit
            cannot copy, or a model that no longer runs on `example` (one line each).
    """
    plan = plan_units(model, rules)
    report = UnitsReport()
    folds = {n: r for n, r in plan.items() if r.unit in _FOLDS}
    if folds:
        if example is None:
            raise ConfigError("model.units: maxout/minmaxout need an example input to trace")
        feeds = feeding_layers(model, list(folds), example)
        for name, rule in folds.items():
            factor = _fold_factor(rule)
            for layer in feeds[name]:
                widen(model, layer, factor)
                report.widened[layer] = factor
    for name, rule in plan.items():
        where = f"model.units[{list(rules).index(rule)}]"
        if rule.unit in _LAYER_UNITS:
            layer = model.get_submodule(name)
            _set(model, name, _quadratic(layer, rule.unit, rule, where))
        else:
            _set(model, name, _activation(rule))
        report.units[name] = rule.unit
    if folds:
        _check_runs(model, example)
    return report


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """Run `example` through the folded model; a shape error becomes one line."""
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    except RuntimeError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"model.units: the model no longer runs after the folds: {first}"
        ) from None


def unit_rules(cfg: ModelConfig) -> list[UnitRule]:
    """The rules of `cfg.units`, or the one rule `model.activation` stands for (none for relu)."""
    if cfg.units:
        return list(cfg.units)
    return [] if cfg.activation == "relu" else [UnitRule(unit=cfg.activation)]


def _sigmoid_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(output)


def add_sigmoid_output(model: nn.Module) -> nn.Module:
    """Make `model` output `sigmoid(logits)`: one independent probability per class.

    A forward hook on the model itself, so no parameter or state-dict key changes (weights of
    the same network with logits load as they are); `model.output_head` says "sigmoid".
    """
    model.register_forward_hook(_sigmoid_output)
    model.output_head = "sigmoid"  # type: ignore[assignment]
    return model
