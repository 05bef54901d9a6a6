"""Models from other libraries, named by reference: `torchvision:NAME`, `timm:NAME`,
`package.module:factory`.

A reference is accepted wherever a model is named (`nettle count`, `model.name` in a run
config, `distill.teacher`):

- `torchvision:resnet18`: `torchvision.models.get_model_builder("resnet18")`, built without
  weights (nettle never downloads; give `model.weights` to start from a file).
- `timm:resnet18`: `timm.create_model("resnet18")` (the optional `timm` package,
  `pip install timm`), `pretrained` left off for the same reason.
- `mypkg.nets:build_net`: the callable `build_net` of the importable module `mypkg.nets`
  (a function or a class; `mypkg.nets:Zoo.small` reaches an attribute of an attribute).
  Naming a module in a config imports it, which runs its code: name only your own.

`model.kwargs` are passed to the builder. `num_classes` is passed when the builder takes it
(torchvision's and timm's do); `in_channels` and `conv` only to a factory of your own that
names them. Any other foreign network keeps its own input channels, and when the data has
fewer (grey digits for an RGB network), `RepeatChannels` is put before it: it tiles the image
channels to the count the first convolution expects, so each RGB plane sees the grey image,
which is how RGB-pretrained weights are usually applied to grey images.

Example:
    >>> net = build_reference("torchvision:resnet18", num_classes=10)
    >>> net.fc.out_features
    10
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from nettle.nn.normalize import RepeatChannels
from nettle.registry import UnknownNameError

__all__ = [
    "RepeatChannels",
    "build_reference",
    "channel_adapter",
    "first_conv",
    "get_builder",
    "is_reference",
    "parse_reference",
    "takes_conv",
]

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_DOWNLOADS = ("weights", "pretrained", "pretrained_cfg", "checkpoint_path")


def is_reference(name: str) -> bool:
    """Whether `name` names a foreign model (it holds a colon) rather than a zoo model."""
    return ":" in name


def parse_reference(name: str) -> tuple[str, str]:
    """`"torchvision:resnet18"` -> `("torchvision", "resnet18")`; a malformed one raises."""
    source, _, target = name.strip().partition(":")
    if not source or not target or not _DOTTED.match(source) or not _DOTTED.match(target):
        raise ValueError(
            f"model {name!r}: expected torchvision:NAME, timm:NAME or package.module:factory"
        )
    return source, target


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The callable that builds the foreign model `name` (see the module docstring).

    Raises:
        UnknownNameError: no such torchvision or timm model, or no such attribute of the module
            (the message lists close names).
        ValueError: a malformed reference, timm missing, or a module that cannot be imported.
    """
    source, target = parse_reference(name)
    if source == "torchvision":
        return _torchvision(name, target)
    if source == "timm":
        return _timm(name, target)
    return _imported(name, source, target)


def _close(word: str, names: list[str]) -> str:
    close = difflib.get_close_matches(word, names, n=5, cutoff=0.6)
    return f"close: {', '.join(close)}" if close else "no close name"


def _torchvision(name: str, target: str) -> Callable[..., nn.Module]:
    from torchvision import models

    try:
        return models.get_model_builder(target.lower())
    except ValueError:
        raise UnknownNameError(
            f"unknown torchvision model {name!r} ({_close(target.lower(), models.list_models())}"
            "; all: torchvision.models.list_models())"
        ) from None


def _timm(name: str, target: str) -> Callable[..., nn.Module]:
    try:
        import timm
    except ImportError:
        raise ValueError(f"{name} needs the timm package: pip install timm") from None
    if not timm.is_model(target):
        raise UnknownNameError(
            f"unknown timm model {name!r} ({_close(target, timm.list_models())}"
            "; all: timm.list_models())"
        )
    return functools.partial(timm.create_model, target)


def _imported(name: str, module_name: str, attr: str) -> Callable[..., nn.Module]:
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model {name!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module's own code failed while importing
        raise ValueError(
            f"model {name!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc})"
        ) from exc
    for i, part in enumerate(attr.split(".")):
        owner = ".".join([module_name, *attr.split(".")[:i]])
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise UnknownNameError(
                f"model {name!r}: {owner} has no {part!r} ({_close(part, public)})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {name!r}: {module_name}:{attr} is not callable")
    return obj


def _takes(builder: Callable[..., Any], arg: str, by_name: bool = False) -> bool:
    """Whether `builder` accepts keyword `arg` (through `**kwargs` too unless `by_name`)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    if arg in params:
        return params[arg].kind in (params[arg].KEYWORD_ONLY, params[arg].POSITIONAL_OR_KEYWORD)
    return not by_name and any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_reference(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    conv: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The bare foreign network `name` (no input wrappers, no substitution by surgery).

    Args:
        name: a reference, see the module docstring.
        num_classes: passed when the builder takes it; None keeps the builder's default.
        in_channels: passed only to a factory that names an `in_channels` argument.
        conv: passed only to a factory that names a `conv` argument (see `takes_conv`).
        **kwargs: the builder's own options (`model.kwargs`).

    Raises:
        ValueError: options asking for downloaded weights, options the builder refuses, or a
            builder that returns something other than an `nn.Module`.
    """
    builder = get_builder(name)
    source, _ = parse_reference(name)
    if source in ("torchvision", "timm"):
        asked = [k for k in _DOWNLOADS if kwargs.get(k)]
        if asked:
            raise ValueError(
                f"model.kwargs.{asked[0]}: nettle never downloads weights; save them with "
                f"torch.save and give the file as model.weights ({name})"
            )
    args = dict(kwargs)
    if num_classes is not None and _takes(builder, "num_classes"):
        args["num_classes"] = num_classes
    if in_channels is not None and _takes(builder, "in_channels", by_name=True):
        args["in_channels"] = in_channels
    if conv is not None:
        args["conv"] = conv
    try:
        net = builder(**args)
    except (TypeError, ValueError) as exc:
        why = next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__
        shown = {k: v for k, v in args.items() if k not in ("num_classes", "in_channels")}
        raise ValueError(
            f"model {name!r} cannot be built with {shown or 'no options'}: {why}"
        ) from exc
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"model {name!r}: the builder returned a {type(net).__name__}, not a module"
        )
    return net


def takes_conv(name: str) -> bool:
    """Whether the factory of reference `name` builds its own substitutes (names `conv`)."""
    source, _ = parse_reference(name)
    return source not in ("torchvision", "timm") and _takes(get_builder(name), "conv", True)


def first_conv(net: nn.Module) -> tuple[str, nn.modules.conv._ConvNd] | None:
    """The first convolution of `net` in module order (its stem, for the usual layouts)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            return name, module
    return None


def channel_adapter(name: str, net: nn.Module, in_channels: int) -> RepeatChannels | None:
    """`RepeatChannels` when the data has fewer channels than `net`'s first convolution takes.

    Raises:
        ValueError: the data's channels cannot be tiled to the network's (more, or not a
            divisor).
    """
    found = first_conv(net)
    if found is None or found[1].in_channels == in_channels:
        return None
    layer, conv = found
    want = conv.in_channels
    if in_channels < want and want % in_channels == 0:
        return RepeatChannels(want // in_channels)
    raise ValueError(
        f"model {name!r} takes {want} input channels (its first convolution {layer}) but the "
        f"data has {in_channels}; only fewer channels that divide {want} are repeated"
    )
