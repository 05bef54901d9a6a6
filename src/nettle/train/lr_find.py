"""The learning-rate range test (Smith 2017, arXiv:1506.01186; as fastai's `lr_find`).

The learning rate grows exponentially from `start_lr` to `end_lr` over `num_iter` minibatches
while the model trains on the run's own objective (`objective(model, x, y, timer) ->
LossOutput`, as `nettle.experiment.objective.build_objective` builds it: cross-entropy, CTC,
sigmoid-MSE, Bayesian, adversarial or distillation; cross-entropy when none is given), stepping
as the Trainer does (the batch augmented, replayed `objective.replays` times, `after_step`
after each step). The loss is smoothed with an exponential moving average (debiased,
`beta = 0.98`) and the test stops once the smoothed loss exceeds `diverge` times its best or
is not finite. The model's and the optimiser's states, the random state and the objective's
checkpointed state (`extra_state` / `load_extra_state`, where it has them) are restored
afterwards, so the test leaves no trace on them.

Suggestions (all returned, none hidden): `steepest_lr`, where the smoothed loss falls fastest
(gradient taken against log10(lr), as the LRs are log-spaced); `min_loss_lr`, where it is
lowest; `max_lr = min_loss_lr / 10` (fastai's "minimum" rule), a safe peak for one-cycle or
triangular schedules; and `base_lr = max_lr / 4`, the low end of a cyclical schedule.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from nettle.measure.timing import PhaseTimer
from nettle.train.checkpoint import capture_rng, restore_rng
from nettle.train.objectives import CrossEntropy, Objective

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

__all__ = ["LRFindResult", "lr_find", "plot_lr_find"]


@dataclass
class LRFindResult:
    """The sweep and the suggested learning rates."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    steepest_lr: float = math.nan
    min_loss_lr: float = math.nan
    max_lr: float = math.nan
    base_lr: float = math.nan
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _batches(data: Dataset, batch_size: int, generator: torch.Generator):
    x_all, y_all = data.tensors if hasattr(data, "tensors") else map(torch.stack, zip(*data))
    while True:
        order = torch.randperm(len(y_all), generator=generator)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield x_all[idx], torch.as_tensor(y_all[idx])


def lr_find(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batch_size: int = 64,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    diverge: float = 4.0,
    beta: float = 0.98,
    seed: int = 0,
    *,
    objective: Objective | None = None,
    augment: Augment | None = None,
    timer: PhaseTimer | None = None,
) -> LRFindResult:
    """Run the range test on `model` with `optimizer`; both are restored afterwards.

    Args:
        model, optimizer: what is trained (and restored); `model` sits on its device.
        data: the training set; batches of `batch_size` are drawn in a `seed`ed order.
        start_lr, end_lr, num_iter: the exponential sweep, one learning rate per step.
        diverge, beta: the stopping factor and the smoothing of the loss.
        objective: the loss of a batch (see `nettle.train.objectives`); default cross-entropy.
        augment: the run's batch augmentation, called as `augment(x, generator)`.
        timer: passed to the objective (default: a disabled `PhaseTimer`).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    device = next(model.parameters()).device
    objective = objective if objective is not None else CrossEntropy()
    timer = timer if timer is not None else PhaseTimer(enabled=False)
    replays = int(getattr(objective, "replays", 1))
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    objective_state = _objective_state(objective)
    rng = capture_rng()
    was_training = model.training
    result = LRFindResult()
    ratio = (end_lr / start_lr) ** (1 / max(num_iter - 1, 1))
    avg, best = 0.0, math.inf
    batches = _batches(data, batch_size, torch.Generator().manual_seed(seed))
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1) if augment is not None else None
    try:
        model.train()
        for i in range(num_iter):
            lr = start_lr * ratio**i
            for group in optimizer.param_groups:
                group["lr"] = lr
            if i % replays == 0:  # "free" adversarial training steps on each batch `replays` times
                x, y = (t.to(device) for t in next(batches))
                if augment is not None:
                    x = augment(x, aug_gen)
            value = _step(model, optimizer, objective, x, y, timer)
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(value)
            result.smoothed.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(smooth) or smooth > diverge * best:
                result.stopped_early = True
                break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        _restore_objective(objective, objective_state)
        restore_rng(rng)
        model.train(was_training)
    _suggest(result)
    return result


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    timer: PhaseTimer,
) -> float:
    """One training step on the objective's loss, as the Trainer takes it; returns the loss."""
    loss = objective(model, x, y, timer).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after_step = getattr(objective, "after_step", None)
    if callable(after_step):  # e.g. Bayesian variance clipping, the "free" perturbation
        after_step(model)
    return float(loss.detach())


def _objective_state(objective: Objective) -> dict[str, Any] | None:
    """A copy of what the objective checkpoints (`extra_state()`), None if it has nothing."""
    extra = getattr(objective, "extra_state", None)
    return copy.deepcopy(extra()) if callable(extra) else None


def _restore_objective(objective: Objective, state: dict[str, Any] | None) -> None:
    load = getattr(objective, "load_extra_state", None)
    if state is not None and callable(load):
        load(state)


def _suggest(r: LRFindResult) -> None:
    finite = [(lr, s) for lr, s in zip(r.lrs, r.smoothed) if math.isfinite(s)]
    if len(finite) < 3:
        return
    lrs, sm = zip(*finite)
    i_min = min(range(len(sm)), key=sm.__getitem__)
    r.min_loss_lr = lrs[i_min]
    logs = [math.log10(v) for v in lrs]
    grads = [(sm[i + 1] - sm[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, i_min or 1)]
    if grads:
        r.steepest_lr = lrs[1 + min(range(len(grads)), key=grads.__getitem__)]
    r.max_lr = r.min_loss_lr / 10
    r.base_lr = r.max_lr / 4


def plot_lr_find(result: LRFindResult) -> Figure:
    """Loss (raw and smoothed) against the learning rate, with the suggestions marked."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.losses, color="0.75", label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    marks = [  # distinct dashes, so lines that coincide stay visible
        ("max_lr (min/10)", result.max_lr, "tab:red", (0, (6, 3)), 1.5),
        ("steepest", result.steepest_lr, "tab:green", (0, (1, 2)), 2.5),
        ("base_lr", result.base_lr, "tab:orange", (0, (4, 2, 1, 2)), 1.5),
    ]
    for label, lr, colour, dashes, width in marks:
        if math.isfinite(lr):
            ax.axvline(
                lr, color=colour, linestyle=dashes, linewidth=width, label=f"{label} {lr:.2g}"
            )
    if math.isfinite(result.min_loss_lr):
        i = result.lrs.index(result.min_loss_lr)
        label = f"lowest smoothed loss at {result.min_loss_lr:.2g}"
        ax.plot([result.min_loss_lr], [result.smoothed[i]], "o", color="tab:blue", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test")
    finite = [s for s in result.smoothed if math.isfinite(s)]
    raw = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite + raw) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig
