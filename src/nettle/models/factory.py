"""The model registry and factory: `create_model(name, ...)`, `list_models()`.

Every builder takes `num_classes`, `in_channels` and `conv` (the substitute spec for the
convolutions its family substitutes; None = dense) plus its own keyword arguments, which are
checked: an unknown keyword is an error that names it. Models take images in [0, 1]; with
`mean` and `std` a `Normalize` module is put first.

Families with a pattern: `wrn-<depth>-<width>` (CIFAR WideResNet, e.g. `wrn-28-10`).

Models of other libraries are named by reference (`torchvision:resnet18`, `timm:resnet18`,
`package.module:factory`; see `nettle.models.references`). Their convolutions are substituted
by surgery (`nettle.compress.substitute.substitute_convs`: the ungrouped square convolutions
with a kernel above 1 except the stem; the report is the model's `substitution` attribute),
and a `RepeatChannels` module is put before them when the data has fewer channels than their
first convolution takes. The wrapper is `Sequential(normalize?, repeat?, net)`: `unwrap`
returns the network inside.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from nettle.compress.substitute import substitute_convs
from nettle.models.references import build_reference, channel_adapter, is_reference, takes_conv
from nettle.nn.normalize import Normalize
from nettle.registry import Registry, UnknownNameError

__all__ = ["MODELS", "create_model", "list_models", "unwrap"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
_PATTERNS = ["wrn-<depth>-<width>"]


def list_models() -> list[str]:
    """Registered model names, plus the name patterns (`wrn-<depth>-<width>`)."""
    return sorted([n for n in MODELS.names() if not n.startswith("_")] + _PATTERNS)


def _resolve(name: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    key = name.strip().lower()
    match = _WRN.match(key)
    if match and key not in MODELS and key != "wrn-50-2":
        return MODELS.get("_wrn"), {"depth": int(match[1]), "width": int(match[2])}
    if key in MODELS and not key.startswith("_"):
        return MODELS.get(key), {}
    raise UnknownNameError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def _check_kwargs(
    name: str, builder: Callable[..., nn.Module], fixed: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    clash = [k for k in kwargs if k in fixed]
    if clash:
        raise ValueError(f"model {name!r} sets {', '.join(map(repr, clash))} by its name")
    params = inspect.signature(builder).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        allowed = [k for k in params if k not in ("num_classes", "in_channels", "conv", *fixed)]
        raise ValueError(
            f"model {name!r} takes no argument {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(allowed) or '(none)'}"
        )


def create_model(
    name: str,
    num_classes: int | None = 10,
    in_channels: int = 3,
    conv: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model by name, or a foreign model by reference.

    Args:
        name: a registered name or pattern, see `list_models()`, or a reference such as
            `torchvision:resnet18` (`nettle.models.references`).
        num_classes: outputs of the classifier (None: the builder's default).
        in_channels: channels of the input images.
        conv: substitute for the convolutions the family substitutes (e.g. "Sep", "ACDC").
        mean: per-channel mean for a `Normalize` first module (with `std`).
        std: per-channel standard deviation.
        **kwargs: family options (e.g. `dropout` for WRN, `head` for VGG).
    """
    classes = {} if num_classes is None else {"num_classes": num_classes}
    if is_reference(name):
        _check_normalization(mean, std, in_channels)
        return _create_foreign(name, classes, in_channels, conv, mean, std, kwargs)
    builder, fixed = _resolve(name)
    _check_kwargs(name, builder, fixed, kwargs)
    _check_normalization(mean, std, in_channels)
    model = builder(**classes, in_channels=in_channels, conv=conv, **fixed, **kwargs)
    return _wrap(model, mean, std)


def _check_normalization(
    mean: Sequence[float] | None, std: Sequence[float] | None, in_channels: int
) -> None:
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None and len(mean) != in_channels:
        raise ValueError(f"mean has {len(mean)} values but the model has {in_channels} channels")


def _create_foreign(
    name: str,
    classes: dict[str, int],
    in_channels: int,
    conv: str | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    """A foreign network, substituted by surgery unless its factory takes `conv` itself."""
    own_conv = conv is not None and takes_conv(name)
    net = build_reference(
        name, classes.get("num_classes"), in_channels, conv if own_conv else None, **kwargs
    )
    report = None
    if conv is not None and not own_conv:
        report = substitute_convs(net, conv)
    model = _wrap(net, mean, std, channel_adapter(name, net, in_channels))
    if report is not None:
        model.substitution = report  # type: ignore[assignment]
    return model


def _wrap(
    model: nn.Module,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    repeat: nn.Module | None = None,
) -> nn.Module:
    """`Sequential(normalize?, repeat?, net)` with `at_layers` renamed; `model` if neither."""
    if mean is None and repeat is None:
        return model
    at = list(getattr(model, "at_layers", []))
    wrapped = nn.Sequential()
    if mean is not None:
        wrapped.add_module("normalize", Normalize(mean, std))
    if repeat is not None:
        wrapped.add_module("repeat", repeat)
    wrapped.add_module("net", model)
    if hasattr(model, "at_layers"):
        wrapped.at_layers = [f"net.{n}" for n in at]  # type: ignore[assignment]
    return wrapped


def unwrap(model: nn.Module) -> tuple[str, nn.Module]:
    """The network inside `create_model`'s input wrapper and its name prefix ("net."), or
    `("", model)` for a model without one."""
    children = getattr(model, "_modules", {})
    wrapper = {"normalize", "repeat", "net"}
    if isinstance(model, nn.Sequential) and "net" in children and set(children) <= wrapper:
        return "net.", children["net"]
    return "", model
