"""Model surgery for substitutes, and loading a teacher's weights into a student.

The zoo builds substituted networks directly (`create_model(name, conv=...)`); for any other
model, `apply_substitute` replaces chosen `nn.Conv2d` layers in place with a substitute built
with the same signature (`create_conv`: in/out channels, kernel, stride, padding, dilation,
bias). `substitute_convs` chooses the layers as the reference does (Gray et al. 2019 substitute
the 3x3 convolutions of WRN's residual blocks and keep the stem and the 1x1 shortcuts dense):
every ungrouped square `nn.Conv2d` with a kernel larger than 1 except the first convolution
(the stem, which sees the raw image). 1x1 convolutions are pointwise already (shortcuts,
projections, the pointwise half of a separable block) and grouped or depthwise ones are
structured already; they stay dense, as do convolutions a substitute cannot reproduce
(non-square, string or non-zero padding, subclasses with their own forward). Its report names
every convolution left dense and why, so the cost that remains dense is visible.

`load_matching` copies every teacher tensor whose name and shape the student shares
(everything that was not substituted) and says what it skipped, so a student starts from its
teacher's stem, shortcuts, norms and classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nettle.nn.substitutes import create_conv, get_conv_class

__all__ = [
    "LoadReport",
    "SubstitutionReport",
    "apply_substitute",
    "dense_reason",
    "load_matching",
    "substitute_convs",
]


def _conv_args(conv: nn.Conv2d) -> dict:
    def single(v: tuple[int, ...] | int | str, what: str) -> int:
        if isinstance(v, str) or (isinstance(v, tuple) and len(set(v)) != 1):
            raise ValueError(f"cannot substitute a conv with non-square {what} {v!r}")
        return v[0] if isinstance(v, tuple) else v

    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": single(conv.kernel_size, "kernel"),
        "stride": single(conv.stride, "stride"),
        "padding": single(conv.padding, "padding"),
        "dilation": single(conv.dilation, "dilation"),
        "bias": conv.bias is not None,
    }


def apply_substitute(
    model: nn.Module,
    conv: str,
    include: Callable[[str, nn.Conv2d], bool] | None = None,
) -> list[str]:
    """Replace the `nn.Conv2d` layers that `include(name, layer)` selects with substitute `conv`.

    By default every ungrouped conv except the first (the stem) is replaced. Returns the names of
    the replaced layers. Grouped convolutions are never replaced (they already are structured).
    """
    get_conv_class(conv)  # an unknown substitute is named before any layer is touched
    convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d and m.groups == 1]
    if include is None:
        first = convs[0][0] if convs else None

        def include(name: str, layer: nn.Conv2d) -> bool:
            return name != first

    replaced = []
    for name, layer in convs:
        if not include(name, layer):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        place = {"device": layer.weight.device, "dtype": layer.weight.dtype}
        setattr(parent, child, create_conv(conv, **_conv_args(layer), **place))
        replaced.append(name)
    return replaced


def dense_reason(layer: nn.Module, pointwise: bool = False) -> str | None:
    """Why `substitute_convs` keeps `layer` (a convolution) dense, or None to substitute it."""
    if type(layer) is not nn.Conv2d:
        return f"a {type(layer).__name__}, not a plain Conv2d"
    if layer.groups != 1:
        return "grouped" if layer.groups != layer.in_channels else "depthwise"
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return f"padding {layer.padding!r} ({layer.padding_mode})"
    sizes = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    if any(len(set(v)) != 1 for v in sizes):
        return "not square"
    if layer.kernel_size[0] == 1 and not pointwise:
        return "1x1"
    return None


@dataclass
class SubstitutionReport:
    """What `substitute_convs` replaced and which convolutions it left dense, with why."""

    conv: str
    replaced: list[str] = field(default_factory=list)
    dense: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def substitute_convs(model: nn.Module, conv: str, pointwise: bool = False) -> SubstitutionReport:
    """Replace the convolutions of any network that the reference substitutes (see the module
    docstring): every ungrouped square `nn.Conv2d` with a kernel above 1 except the stem.

    Args:
        model: changed in place.
        conv: the substitute spec, e.g. "Generic_0.25".
        pointwise: substitute 1x1 convolutions as well (the zoo's ImageNet ResNets do, as
            Gray et al. for WRN-50-2).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 1))
        >>> report = substitute_convs(net, "Generic_0.5")
        >>> report.replaced, report.dense
        (['1'], {'0': 'stem', '2': '1x1'})
    """
    convs = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed
    ]
    report = SubstitutionReport(conv)
    for i, (name, layer) in enumerate(convs):
        why = "stem" if i == 0 else dense_reason(layer, pointwise)
        if why is None:
            report.replaced.append(name)
        else:
            report.dense[name] = why
    chosen = set(report.replaced)
    apply_substitute(model, conv, include=lambda name, layer: name in chosen)
    return report


@dataclass
class LoadReport:
    """What `load_matching` copied and what it left alone."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    missing_in_teacher: list[str] = field(default_factory=list)
    unused_from_teacher: list[str] = field(default_factory=list)


def load_matching(student: nn.Module, teacher_state: Mapping[str, torch.Tensor]) -> LoadReport:
    """Copy every teacher tensor (parameters and buffers) whose name and shape the student has."""
    report = LoadReport()
    own = student.state_dict()
    update = {}
    for name, value in own.items():
        if name not in teacher_state:
            report.missing_in_teacher.append(name)
        elif teacher_state[name].shape != value.shape:
            report.shape_mismatch.append(name)
        else:
            update[name] = teacher_state[name]
            report.loaded.append(name)
    report.unused_from_teacher = [n for n in teacher_state if n not in own]
    student.load_state_dict(update, strict=False)
    return report
