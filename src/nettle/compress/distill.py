"""Distillation losses: attention transfer and Hinton knowledge distillation.

Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017,
arXiv:1612.03928): the attention map of an activation (N, C, H, W) is the per-example
L2-normalised vector of the channel mean of its squares; the loss is the mean squared difference
of student and teacher maps. As in the structured-substitution reference (Gray et al. 2019),
with `m` maps each map's term is weighted by `3 * beta / m` (so `beta` is the weight per map of
a three-group WRN), default `beta = 1e3`.

Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531):
`alpha * 2 * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)`; the KL is
averaged over the batch (`batchmean`, the true KL per example).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer

__all__ = ["DistillObjective", "FeatureTap", "at_loss", "attention_map", "kd_loss"]


def attention_map(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W): L2-normalised channel mean of `|x|^p`."""
    return F.normalize(x.pow(p).mean(dim=1).flatten(1), dim=1, eps=1e-12)


def at_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], beta: float = 1e3
) -> torch.Tensor:
    """Attention-transfer loss over matching lists of activations (same spatial sizes)."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student maps but {len(teacher)} teacher maps")
    if not student:
        raise ValueError("attention transfer needs at least one pair of activations")
    weight = 3.0 * beta / len(student)
    terms = []
    for i, (s, t) in enumerate(zip(student, teacher)):
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"attention map {i}: student size {tuple(s.shape[-2:])} != teacher size "
                f"{tuple(t.shape[-2:])}"
            )
        terms.append((attention_map(s) - attention_map(t)).pow(2).mean())
    return weight * torch.stack(terms).sum()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Hinton's distillation loss mixed with cross-entropy on the labels."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
    )
    ce = F.cross_entropy(student_logits, target)
    return alpha * 2.0 * t * t * kl + (1.0 - alpha) * ce


class FeatureTap:
    """Records the outputs of named submodules on every forward pass (forward hooks).

    Use as a context manager, or call `remove()`; `outputs` holds the latest outputs in the
    order of `names`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> with FeatureTap(net, ["0"]) as tap:
        ...     _ = net(torch.zeros(1, 1, 5, 5))
        >>> tap.outputs[0].shape
        torch.Size([1, 2, 3, 3])
    """

    def __init__(self, model: nn.Module, names: Sequence[str], detach: bool = False) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"no submodule named {', '.join(map(repr, missing))} in the model")
        self.names = list(names)
        self.detach = detach
        self._out: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            self._out[name] = output.detach() if self.detach else output

        return hook

    @property
    def outputs(self) -> list[torch.Tensor]:
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise RuntimeError(f"no output recorded yet for {', '.join(missing)}")
        return [self._out[n] for n in self.names]

    def clear(self) -> None:
        self._out.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class DistillObjective:
    """Student loss: cross-entropy (or KD) plus attention transfer from a frozen teacher.

    The teacher runs in eval mode under `no_grad` (its activations keep no graph), timed as the
    "teacher" phase. Attention maps are taken at `layers` of both networks (same architecture:
    the zoo's `at_layers`). The loss is 0 when the student equals the teacher and `alpha = 1`.

    Args:
        teacher: the trained teacher (moved to the student's device by the caller).
        layers: names of the attention-transfer points, in both networks.
        beta: attention-transfer weight (`3 * beta / len(layers)` per map).
        alpha: KD weight; 0 trains on the labels only (the reference's setting).
        temperature: KD temperature.
    """

    def __init__(
        self,
        teacher: nn.Module,
        layers: Sequence[str],
        beta: float = 1e3,
        alpha: float = 0.0,
        temperature: float = 4.0,
    ) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.layers, self.beta, self.alpha, self.temperature = (
            list(layers),
            beta,
            alpha,
            temperature,
        )
        self._teacher_tap = FeatureTap(self.teacher, self.layers, detach=True)
        self._student_tap: FeatureTap | None = None
        self._student: nn.Module | None = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        if self._student is not model:
            if self._student_tap is not None:
                self._student_tap.remove()
            self._student_tap, self._student = FeatureTap(model, self.layers), model
        with timer.phase("teacher"), torch.no_grad():
            t_logits = self.teacher(x)
            t_maps = self._teacher_tap.outputs
        with timer.phase("forward"):
            s_logits = model(x)
            s_maps = self._student_tap.outputs
            parts = {}
            if self.alpha > 0:
                task = kd_loss(s_logits, t_logits, y, self.alpha, self.temperature)
                parts["kd"] = task.detach()
            else:
                task = F.cross_entropy(s_logits, y)
                parts["ce"] = task.detach()
            at = at_loss(s_maps, t_maps, self.beta) if self.beta > 0 else task.new_zeros(())
            parts["at"] = at.detach()
        return LossOutput(task + at, s_logits, parts)
