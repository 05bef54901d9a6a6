"""Model surgery for substitutes, and loading a teacher's weights into a student.

The zoo builds substituted networks directly (`create_model(name, conv=...)`); for any other
model, `apply_substitute` replaces chosen `nn.Conv2d` layers in place with a substitute built
with the same signature. `load_matching` copies every teacher tensor whose name and shape the
student shares (everything that was not substituted) and says what it skipped, so a student
starts from its teacher's stem, shortcuts, norms and classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from nettle.nn.substitutes import get_conv_class

__all__ = ["LoadReport", "apply_substitute", "load_matching"]


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
    factory = get_conv_class(conv)
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
        new = factory(**_conv_args(layer)).to(device=layer.weight.device, dtype=layer.weight.dtype)
        setattr(parent, child, new)
        replaced.append(name)
    return replaced


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
