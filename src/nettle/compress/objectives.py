"""The compression objectives of a run: distillation from a teacher and Bayesian training.

Registered in `nettle.train.objective_registry.OBJECTIVES` as "distill" (the `distill:`
section) and "bayes" (the `bayes:` section). The losses themselves live in
`nettle.compress.distill` and `nettle.compress.bayes`; this module loads what they need (the
teacher, its weights, the attention-transfer points) from the config.

Attention-transfer points, as (student, teacher) module pairs, come from, in this order:
`distill.at_layers` (names in both networks, or [student, teacher] pairs); the student's own
`at_layers` when the teacher has modules of those names (a zoo teacher of the same family);
else the end of each resolution stage of both networks (`resolution_stages`), paired in order
among the stages of equal size. Attention transfer compares maps of equal size (Zagoruyko &
Komodakis 2017), so a pair whose maps differ in size is refused, naming both layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from nettle.compress.bayes import BayesObjective
from nettle.compress.bayes_evolution import EvolutionRecorder
from nettle.compress.bayes_prune import bayesian_layers
from nettle.compress.distill import DistillObjective
from nettle.compress.substitute import load_matching
from nettle.config import ExperimentConfig
from nettle.models.build import load_teacher
from nettle.models.factory import unwrap
from nettle.train.data import get_dataset_info
from nettle.train.objective_registry import register_objective

__all__ = ["attention_pairs", "build_bayes", "build_distill", "resolution_stages"]

Size = tuple[int, int]


def _probe(
    model: nn.Module, input_shape: Sequence[int], names: Sequence[str] | None = None
) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, output shape, call depth) of each module call of one probe batch, in order of
    completion; the call depth counts the calls of other modules that enclose it.

    The batch is two zero images (eval mode, no gradients; every module's mode restored).
    """
    modules = dict(model.named_modules())
    chosen = [n for n in (modules if names is None else names) if n]
    events: list[tuple[str, tuple[int, ...], int]] = []
    stack: list[str] = []

    def enter(module: nn.Module, inputs: Any) -> None:
        stack.append("")

    def leave(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            stack.pop()
            if isinstance(output, torch.Tensor):
                events.append((name, tuple(output.shape), len(stack)))

        return record

    handles = []
    for n in chosen:
        handles.append(modules[n].register_forward_pre_hook(enter))
        handles.append(modules[n].register_forward_hook(leave(n)))
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        for module, mode in modes.items():
            module.train(mode)
    return events


def resolution_stages(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, Size]]:
    """The end of each resolution stage of any network, with its map size.

    A stage is every module call whose output is a 4-D map of one height and width, in order
    of the size's first appearance; its end is the last of the outermost of those calls (the
    fewest enclosing calls): a residual group rather than the ReLU of its last block or the
    pre-activation of the next group, a whole cell rather than the branch of a later cell that
    reads it. Maps of 1x1 (global pooling, squeeze-and-excitation) are left out: their
    attention map is a constant. Modules of the input wrapper (`Normalize`,
    `RepeatChannels`) are not candidates.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU())
        >>> resolution_stages(net, (1, 8, 8))
        [('0', (8, 8)), ('2', (4, 4))]
    """
    prefix, _ = unwrap(model)
    calls: dict[Size, list[tuple[str, int]]] = {}
    for name, shape, depth in _probe(model, input_shape):
        if len(shape) == 4 and shape[2] * shape[3] > 1 and name.startswith(prefix):
            calls.setdefault((shape[2], shape[3]), []).append((name, depth))
    stages = []
    for size, named in calls.items():
        outermost = min(d for _, d in named)
        stages.append(([n for n, d in named if d == outermost][-1], size))
    return stages


def _sizes(model: nn.Module, names: Sequence[str], shape: Sequence[int], who: str) -> list[Size]:
    missing = [n for n in names if n not in dict(model.named_modules())]
    if missing:
        raise ValueError(f"distill.at_layers: the {who} has no module {missing[0]!r}")
    outputs = {n: out for n, out, _ in _probe(model, shape, names)}
    flat = [n for n in names if len(outputs.get(n, ())) != 4]
    if flat:
        raise ValueError(f"distill.at_layers: the {who}'s {flat[0]!r} gives no 4-D map")
    return [outputs[n][2:] for n in names]


def _pair_stages(
    student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]
) -> list[tuple[str, str]]:
    """The resolution stages of equal size in both networks, paired in order."""
    s_stages = resolution_stages(student, input_shape)
    t_stages = resolution_stages(teacher, input_shape)
    pairs, start = [], 0
    for name, size in s_stages:
        match = next((i for i in range(start, len(t_stages)) if t_stages[i][1] == size), None)
        if match is not None:
            pairs.append((name, t_stages[match][0]))
            start = match + 1
    if not pairs:
        raise ValueError(
            f"distill: no resolution stage of the same size in student ({_show(s_stages)}) and "
            f"teacher ({_show(t_stages)}); name [student, teacher] pairs in distill.at_layers"
        )
    return pairs


def _show(stages: list[tuple[str, Size]]) -> str:
    return ", ".join(f"{n} {h}x{w}" for n, (h, w) in stages) or "(none)"


def attention_pairs(
    cfg: ExperimentConfig, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]
) -> tuple[list[tuple[str, str, Size]], str]:
    """The (student, teacher, map size) attention-transfer points and where they came from
    ("config", "student" or "stages"); see the module docstring.

    Raises:
        ValueError: a named module is missing or gives no map, the maps of a pair differ in
            size, or no stage of the two networks has the same size.
    """
    teacher_modules = dict(teacher.named_modules())
    own = list(getattr(student, "at_layers", []))
    if cfg.distill.at_layers:
        items = [(n, n) if isinstance(n, str) else tuple(n) for n in cfg.distill.at_layers]
        source = "config"
    elif own and all(n in teacher_modules for n in own):
        items, source = [(n, n) for n in own], "student"
    else:
        items, source = _pair_stages(student, teacher, input_shape), "stages"
    s_sizes = _sizes(student, [s for s, _ in items], input_shape, "student")
    t_sizes = _sizes(teacher, [t for _, t in items], input_shape, "teacher")
    for (s, t), a, b in zip(items, s_sizes, t_sizes):
        if a != b:
            raise ValueError(
                f"distill: attention maps differ in size: student {s} {a[0]}x{a[1]}, teacher "
                f"{t} {b[0]}x{b[1]}; attention transfer compares maps of equal size"
            )
    return [(s, t, size) for (s, t), size in zip(items, s_sizes)], source


class _PairedDistill(DistillObjective):
    """`DistillObjective` whose teacher is tapped at other module names than the student.

    The base taps the teacher at `layers` when built and the student at `self.layers` on its
    first call, so the student's names are set after the base is built with the teacher's.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student_layers: list[str],
        teacher_layers: list[str],
        **options: float,
    ) -> None:
        super().__init__(teacher, teacher_layers, **options)
        self.layers = list(student_layers)


@register_objective("distill", when=lambda cfg: cfg.distill is not None)
def build_distill(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[DistillObjective, dict[str, Any]]:
    """Attention transfer (and KD) from `distill.teacher` at the points of `attention_pairs`.

    The teacher is a run dir, a checkpoint, or a model name with `distill.teacher_weights`.
    With `distill.load_weights` the student first takes every teacher weight whose name and
    shape match (`load_matching`).

    Raises:
        ValueError: see `attention_pairs`; a teacher that cannot be loaded.
    """
    dist = cfg.distill
    teacher = load_teacher(dist.teacher, dist.teacher_weights, cfg).to(device)
    data = get_dataset_info(cfg.data.name, cfg.data.root, cfg.data.image_size)
    shape = (cfg.model.in_channels or data.in_channels, *data.image_size)
    pairs, source = attention_pairs(cfg, model, teacher, shape)
    student_layers, teacher_layers = [p[0] for p in pairs], [p[1] for p in pairs]
    info: dict[str, Any] = {
        "teacher": str(dist.teacher),
        "at_layers": student_layers,
        "teacher_at_layers": teacher_layers,
        "at_sizes": [list(p[2]) for p in pairs],
        "at_source": source,
    }
    if getattr(teacher, "weights_report", None) is not None:
        info["teacher_weights"] = teacher.weights_report
    if dist.load_weights:
        report = load_matching(model, teacher.state_dict())
        info.update(
            loaded=len(report.loaded), not_loaded=report.shape_mismatch + report.missing_in_teacher
        )
    options = {"beta": dist.beta, "alpha": dist.alpha, "temperature": dist.temperature}
    if student_layers == teacher_layers:
        return DistillObjective(teacher, student_layers, **options), {"distill": info}
    return _PairedDistill(teacher, student_layers, teacher_layers, **options), {"distill": info}


@register_objective("bayes", when=lambda cfg: cfg.bayes is not None)
def build_bayes(
    cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, device: torch.device
) -> tuple[BayesObjective, dict[str, Any]]:
    """Cross-entropy + KL / examples with the `bayes.kl_warmup_epochs` warm-up, recording the
    first Bayesian layer every `bayes.record_every` epochs; its `final_report` prunes at
    `bayes.threshold`. The facts name the converted layers (`bayes.convert`)."""
    b = cfg.bayes
    layers = bayesian_layers(model)
    recorder = None
    if layers and b.record_every:
        recorder = EvolutionRecorder(layers[0][1], b.record_every, cfg.train.epochs)
    objective = BayesObjective(len(train_set), b.threshold, b.kl_warmup_epochs, recorder)
    conversion = getattr(model, "bayes_conversion", None)
    return objective, ({"bayes_conversion": conversion} if conversion is not None else {})
