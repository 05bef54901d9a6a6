"""The substitute registry: convolution replacements chosen by a name and a setting.

A spec is `Name` or `Name_setting` (case-insensitive), e.g. `"Conv"`, `"Shuffle_8"`,
`"TensorTrain_0.8"`. Every registered factory keeps the signature of the convolution it
replaces, `(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
bias=False, setting=None)`, so a model can take any substitute through one `conv=` argument.

Example:
    >>> layer = create_conv("Conv", 16, 32, 3, padding=1)
    >>> tuple(layer.weight.shape)
    (32, 16, 3, 3)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from nettle.registry import Registry

__all__ = [
    "SUBSTITUTES",
    "ConvFactory",
    "create_conv",
    "get_conv_class",
    "list_substitutes",
    "parse_spec",
]

ConvFactory = Callable[..., nn.Module]

SUBSTITUTES: Registry[ConvFactory] = Registry("substitute")


def parse_spec(spec: str) -> tuple[str, float | None]:
    """Split `"Name_setting"` into the lower-case name and the numeric setting (or `None`)."""
    text = spec.strip()
    name, sep, raw = text.rpartition("_")
    if sep:
        try:
            setting = float(raw)
        except ValueError:
            return text.lower(), None
        if not math.isfinite(setting):
            raise ValueError(f"{spec!r}: the setting must be a finite number, e.g. 0.5")
        return name.lower(), setting
    return text.lower(), None


def create_conv(
    spec: str | None,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    bias: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build the layer named by `spec` (`None` means a dense `nn.Conv2d`).

    `device` and `dtype`, when given, are passed to the factory (every built-in one takes them).
    """
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    return get_conv_class(spec)(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=bias,
        **placement,
    )


def get_conv_class(spec: str | None) -> ConvFactory:
    """A callable with `nn.Conv2d`'s leading signature that builds the substitute `spec`."""
    if spec is None:
        return SUBSTITUTES.get("conv")
    name, setting = parse_spec(spec)
    factory = SUBSTITUTES.get(name)
    return functools.partial(factory, setting=setting)


def list_substitutes() -> list[str]:
    """Registered substitute names."""
    return SUBSTITUTES.names()


@SUBSTITUTES.register("conv")
def dense_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    bias: bool = False,
    setting: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Conv2d:
    """The dense reference: a plain `nn.Conv2d` (no setting)."""
    if setting is not None:
        raise ValueError(f"substitute 'Conv' takes no setting, got {setting}")
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        bias=bias,
        device=device,
        dtype=dtype,
    )
