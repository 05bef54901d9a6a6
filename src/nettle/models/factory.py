"""The model registry and factory: `create_model(name, ...)`, `list_models()`.

Every builder takes `num_classes`, `in_channels` and `conv` (the substitute spec for the
convolutions its family substitutes; None = dense) plus its own keyword arguments, which are
checked: an unknown keyword is an error that names it. Models take images in [0, 1]; with
`mean` and `std` a `Normalize` module is put first.

Families with a pattern: `wrn-<depth>-<width>` (CIFAR WideResNet, e.g. `wrn-28-10`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from nettle.nn.normalize import Normalize
from nettle.registry import Registry, UnknownNameError

__all__ = ["MODELS", "create_model", "list_models"]

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
    num_classes: int = 10,
    in_channels: int = 3,
    conv: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model by name.

    Args:
        name: a registered name or pattern, see `list_models()`.
        num_classes: outputs of the classifier.
        in_channels: channels of the input images.
        conv: substitute for the convolutions the family substitutes (e.g. "Sep", "ACDC").
        mean: per-channel mean for a `Normalize` first module (with `std`).
        std: per-channel standard deviation.
        **kwargs: family options (e.g. `dropout` for WRN, `head` for VGG).
    """
    builder, fixed = _resolve(name)
    _check_kwargs(name, builder, fixed, kwargs)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None and len(mean) != in_channels:
        raise ValueError(f"mean has {len(mean)} values but the model has {in_channels} channels")
    model = builder(num_classes=num_classes, in_channels=in_channels, conv=conv, **fixed, **kwargs)
    if mean is not None:
        at = list(getattr(model, "at_layers", []))
        wrapped = nn.Sequential()
        wrapped.add_module("normalize", Normalize(mean, std))
        wrapped.add_module("net", model)
        wrapped.at_layers = [f"net.{n}" for n in at]  # type: ignore[assignment]
        return wrapped
    return model
