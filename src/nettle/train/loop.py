"""The training loop shared by every kind of run (teacher, student, adversarial, Bayesian).

One step: `data` (next batch, augmentation on the device) -> the objective (`forward`, and
whatever phases it adds, e.g. `attack` or `teacher`) -> `backward` -> `update` (clipping, the
optional gradient guard, optimiser and per-iteration scheduler step). Each phase is timed with
`PhaseTimer` (device-synchronised on CUDA); each epoch record holds the phase totals, their
shares and the per-step medians, and goes to `metrics.jsonl`, TensorBoard (`tb/`) and the
`progress` callback. The library never prints.

The order of examples comes from a permutation seeded by (seed, epoch) (`sampler.py`), so a run
resumed from a checkpoint taken in the middle of an epoch continues at the exact batch, with the
exact random states: its final weights equal those of an uninterrupted run, bit for bit on the
CPU. With `train.deterministic` deterministic kernels are requested (warning where an op has
none; on CUDA `CUBLAS_WORKSPACE_CONFIG` is set unless already set); bit-exactness is tested on
the CPU only.

Extension points (later kinds of runs plug in here, not by editing the loop):
- `objective(model, x, y, timer) -> LossOutput` (`objectives.py`), with optional attributes:
  `on_epoch_start(epoch, epochs)` (also called when a run resumes inside an epoch, so it
  must set its state from its arguments), `after_step(model)`, `extra_state()` /
  `load_extra_state(state)` (checkpointed), and `replays` (each batch is stepped this many
  times, as "free" adversarial training does).
- `param_groups`: the optimiser's parameter groups (e.g. compression-scaled weight decay);
  default one group with `optim.weight_decay` on every parameter (no exemption for norms or
  biases, as the reference code does).
- Modules of the model with `on_epoch_start(epoch, epochs)` (e.g. DARTS drop-path).
- `progress(event, info)`: events "start" (epochs, steps), "step" (step, loss, lr) and
  "epoch" (the epoch record).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from nettle.config import OptimConfig, TrainConfig
from nettle.measure.timing import PhaseTimer
from nettle.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from nettle.train.guards import (
    NonFiniteLossError,
    check_finite,
    clip_gradients,
    grad_norm,
    save_nonfinite_snapshot,
)
from nettle.train.objectives import ClassificationMetric, CrossEntropy, EvalMetric, Objective
from nettle.train.sampler import device_tensors, epoch_order, iterate_batches
from nettle.train.schedules import create_scheduler, schedule_factor

__all__ = ["Trainer", "build_optimizer", "evaluate", "resolve_device"]

log = logging.getLogger(__name__)
Progress = Callable[[str, dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    """`"auto"` is CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW with `cfg.weight_decay` as the default decay."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    batch_size: int = 256,
    device: torch.device | None = None,
    metric: EvalMetric | None = None,
) -> dict[str, float]:
    """`metric` of `model` on `data` (eval mode, restored after); default `ClassificationMetric`
    (mean cross-entropy and accuracy)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    metric = metric if metric is not None else ClassificationMetric()
    metric.reset()
    try:
        for x, y in iterate_batches(data, torch.arange(len(data)), batch_size, device):
            metric.update(model(x), y)
    finally:
        model.train(was_training)
    return metric.compute()


def _flatten_phases(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record for `metrics.jsonl`: `phase_<name>` seconds, `_share`, `_median`."""
    flat = {k: v for k, v in record.items() if k not in ("phases", "phase_shares", "phase_medians")}
    for name, secs in record["phases"].items():
        flat[f"phase_{name}"] = secs
        flat[f"phase_{name}_share"] = record["phase_shares"][name]
        flat[f"phase_{name}_median"] = record["phase_medians"][name]
    return flat


class Trainer:
    """Trains `model` on `train_data` as `cfg` says, optionally checkpointing into `run_dir`.

    Args:
        model: the network (moved to the configured device).
        train_data: training set of (image, label) pairs.
        test_data: evaluated after every epoch (optional).
        cfg: the training configuration.
        batch_size: training batch size; `eval_batch_size` for evaluation.
        run_dir: where `checkpoints/`, `metrics.jsonl` and `tb/` go (None: nothing written).
        augment: batch augmentation `augment(x, generator)` applied on the device.
        objective: the loss of a batch (default cross-entropy).
        param_groups: optimiser parameter groups (default: all parameters, one group).
        config_record: the resolved config, stored in checkpoints.
        progress: callback `(event, info)` for "start", "step" and "epoch" events.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        test_data: Dataset | None,
        cfg: TrainConfig,
        *,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        run_dir: str | Path | None = None,
        augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
        objective: Objective | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        config_record: dict[str, Any] | None = None,
        progress: Progress | None = None,
        num_workers: int = 0,
    ) -> None:
        self.cfg, self.device = cfg, resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.train_data, self.test_data = train_data, test_data
        self.batch_size, self.eval_batch_size, self.num_workers = (
            batch_size,
            eval_batch_size,
            num_workers,
        )
        self.objective = objective or CrossEntropy(cfg.label_smoothing)
        self.optimizer = build_optimizer(param_groups or self.model.parameters(), cfg.optim)
        self.batches_per_epoch = max(1, math.ceil(len(train_data) / batch_size))
        self.replays = int(getattr(self.objective, "replays", 1))  # "free" training
        self.total_steps = cfg.epochs * self.batches_per_epoch * self.replays
        self.scheduler = create_scheduler(
            self.optimizer, cfg.schedule, self.total_steps, self.batches_per_epoch
        )
        self.snapshot_steps = self._lr_minima() if cfg.snapshots else set()
        self.augment = augment
        self.aug_gen = torch.Generator(device=self.device) if augment is not None else None
        if self.aug_gen is not None:
            self.aug_gen.manual_seed(cfg.seed + 1)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config_record = config_record or {}
        self.progress = progress or (lambda event, info: None)
        self.timer = PhaseTimer(self.device)
        self.phase_totals: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "batch": 0, "best_acc": None}
        self._running = {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        self._tb = None
        self._tensors: tuple[torch.Tensor, ...] | None = None  # in-memory data, on the device
        after = getattr(self.objective, "after_step", None)
        self._after_step = after if callable(after) else None

    def _lr_minima(self) -> set[int]:
        """Steps (1-based counts) after which the schedule's LR is at a local minimum."""
        f = schedule_factor(self.cfg.schedule, self.total_steps, 1.0, self.batches_per_epoch)
        lrs = [f(s) for s in range(self.total_steps)]
        return {
            s + 1
            for s in range(1, len(lrs))
            if lrs[s] < lrs[s - 1] and (s + 1 == len(lrs) or lrs[s] <= lrs[s + 1])
        }

    # --- checkpoints ----------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here."""
        extra = getattr(self.objective, "extra_state", None)
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(self.aug_gen),
            "state": {**self.state, "running": dict(self._running)},
            "phase_totals": dict(self.phase_totals),
            "history": list(self.history),
            "objective": extra() if callable(extra) else {},
            "config": self.config_record,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint made by `state_dict`."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        state = dict(ckpt["state"])
        self._running = dict(state.pop("running"))
        self.state = state
        self.phase_totals = dict(ckpt.get("phase_totals", {}))
        self.history = list(ckpt["history"])
        load_extra = getattr(self.objective, "load_extra_state", None)
        if callable(load_extra):
            load_extra(ckpt.get("objective", {}))
        restore_rng(ckpt["rng"], self.aug_gen)

    def save(self, name: str = "last.pt") -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return save_checkpoint(self.state_dict(), self.checkpoint_dir / name)

    def resume(self, path: str | Path | None = None) -> bool:
        """Load `path` (default `checkpoints/last.pt` if present); whether anything was loaded."""
        path = (
            Path(path)
            if path
            else (self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None)
        )
        if path is None or not path.is_file():
            return False
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
        self._truncate_metrics()
        return True

    # --- metrics --------------------------------------------------------------------------

    def _write_metric(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def _truncate_metrics(self) -> None:
        """Drop metric lines written after the checkpoint we resume from (no duplicates)."""
        path = self.run_dir / "metrics.jsonl" if self.run_dir else None
        if path is None or not path.is_file():
            return
        keep = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= self.state["step"]
        ]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)

    def _open_tensorboard(self) -> None:
        if self.run_dir is None or not self.cfg.tensorboard:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.state["step"] or None)

    # --- training -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns a summary (status, metrics, phase totals)."""
        previous = torch.are_deterministic_algorithms_enabled()
        if self.cfg.deterministic and self.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(self.cfg.deterministic, warn_only=True)
        self._open_tensorboard()
        self.progress(
            "start",
            {
                "epochs": self.cfg.epochs,
                "steps": self.total_steps,
                "step": self.state["step"],
                "epoch": self.state["epoch"],
            },
        )
        try:
            while self.state["epoch"] < self.cfg.epochs:
                self._train_epoch(self.state["epoch"])
        finally:
            torch.use_deterministic_algorithms(previous)
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Status, final and best metrics, and where the time went."""
        final = self.history[-1] if self.history else {}
        phases = dict(self.phase_totals)
        if self.state["batch"] > 0:  # stopped inside an epoch: count its steps too
            for name, secs in self.timer.totals().items():
                phases[name] = phases.get(name, 0.0) + secs
        whole = sum(phases.values()) or 1.0
        return {
            "status": "done" if self.state["epoch"] >= self.cfg.epochs else "partial",
            "epochs": self.state["epoch"],
            "steps": self.state["step"],
            "final": final,
            "best_test_acc": self.state["best_acc"],
            "phases": phases,
            "phase_shares": {k: v / whole for k, v in phases.items()},
        }

    def _train_epoch(self, epoch: int) -> None:
        # epoch hooks also run when resuming inside an epoch: they set, not step, their state
        for owner in (self.objective, *self.model.modules()):  # e.g. DARTS drop-path
            hook = getattr(owner, "on_epoch_start", None)
            if callable(hook):
                hook(epoch, self.cfg.epochs)
        self.timer.reset()
        if self._tensors is None:
            self._tensors = device_tensors(self.train_data, self.device)
        order = epoch_order(len(self.train_data), self.cfg.seed, epoch)
        order = order[self.state["batch"] * self.batch_size :]
        batches = iterate_batches(
            self.train_data,
            order,
            self.batch_size,
            self.device,
            tensors=self._tensors,
            num_workers=self.num_workers,
        )
        t0 = time.perf_counter()
        self.model.train()
        for _ in range(math.ceil(len(order) / self.batch_size)):
            with self.timer.phase("data"):
                x, y = next(batches)
                if self.augment is not None:
                    x = self.augment(x, self.aug_gen)
            for replay in range(self.replays):
                self._step(epoch, x, y, last_replay=replay == self.replays - 1)
        self._running["time"] += time.perf_counter() - t0
        self._end_epoch(epoch)

    def _step(self, epoch: int, x: torch.Tensor, y: torch.Tensor, last_replay: bool = True) -> None:
        out = self.objective(self.model, x, y, self.timer)
        loss = float(out.loss.detach())  # the step's one device sync (on CUDA)
        if self.cfg.nan_guard and not check_finite(loss):
            self._nonfinite(x, y, "loss", loss)
        with self.timer.phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
        with self.timer.phase("update"):
            norm = None
            if self.cfg.grad_clip:
                norm = clip_gradients(
                    self.model.parameters(), self.cfg.grad_clip, self.cfg.grad_clip_mode
                )
            if self.cfg.nan_guard_grads:
                norm = grad_norm(self.model.parameters()) if norm is None else norm
                if not math.isfinite(norm):
                    self._nonfinite(x, y, "grad_norm", norm)
            self.optimizer.step()
            self.scheduler.step()
            if self._after_step is not None:
                self._after_step(self.model)
        n = y.shape[0]
        self._running["loss"] += loss * n
        correct = out.correct if out.correct is not None else out.logits.detach().argmax(1) == y
        self._running["correct"] += int(correct.sum())
        self._running["seen"] += n
        self.state["step"] += 1
        self.state["batch"] += int(last_replay)
        step = self.state["step"]
        lr = self.optimizer.param_groups[0]["lr"]
        if step % self.cfg.log_every == 0:
            parts = {k: float(v) for k, v in out.parts.items()}
            self._write_metric(
                {"kind": "step", "step": step, "epoch": epoch + 1, "loss": loss, "lr": lr, **parts}
            )
        if step in self.snapshot_steps and self.checkpoint_dir is not None and last_replay:
            save_checkpoint(
                {
                    "model": self.model.state_dict(),
                    "step": step,
                    "lr": lr,
                    "config": self.config_record,
                },
                self.checkpoint_dir / f"snapshot-step{step}.pt",
            )
        if self.cfg.checkpoint_steps and step % self.cfg.checkpoint_steps == 0 and last_replay:
            self.save()
        self.progress("step", {"step": step, "loss": loss, "lr": lr})

    def _end_epoch(self, epoch: int) -> None:
        r = self._running
        record: dict[str, Any] = {
            "kind": "epoch",
            "epoch": epoch + 1,
            "step": self.state["step"],
            "train_loss": r["loss"] / max(r["seen"], 1),
            "train_acc": r["correct"] / max(r["seen"], 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "time": r["time"],
            "phases": self.timer.totals(),
            "phase_shares": self.timer.fractions(),
            "phase_medians": {k: v.median for k, v in self.timer.stats().items()},
        }
        if self.timer.peak_memory():
            record["phase_peak_memory"] = self.timer.peak_memory()
        if self.test_data is not None:
            t0 = time.perf_counter()
            make = getattr(self.objective, "eval_metric", None)  # e.g. CTC: acc and cer
            metric = make() if callable(make) else None
            ev = evaluate(self.model, self.test_data, self.eval_batch_size, self.device, metric)
            record.update({f"test_{k}": v for k, v in ev.items()})
            record["eval_time"] = time.perf_counter() - t0
        for name, secs in self.timer.totals().items():
            self.phase_totals[name] = self.phase_totals.get(name, 0.0) + secs
        self.history.append(record)
        self._write_metric(_flatten_phases(record))
        self.state.update(epoch=epoch + 1, batch=0)
        self._running = {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        acc = record.get("test_acc")
        if (
            acc is not None
            and self.cfg.keep_best
            and (self.state["best_acc"] is None or acc > self.state["best_acc"])
        ):
            self.state["best_acc"] = acc
            self.save("best.pt")
        if (epoch + 1) % self.cfg.checkpoint_every == 0 or epoch + 1 == self.cfg.epochs:
            self.save()
        self.progress("epoch", record)

    def _nonfinite(self, x: torch.Tensor, y: torch.Tensor, what: str, value: float) -> None:
        """Save a debug snapshot (when writing a run dir) and stop with `NonFiniteLossError`."""
        step, snapshot = self.state["step"], None
        if self.checkpoint_dir is not None:
            path = self.checkpoint_dir / f"nonfinite-step{step}.pt"
            save_nonfinite_snapshot(
                path,
                self.model,
                self.optimizer,
                x,
                y,
                step,
                **{what: value},
                config=self.config_record,
            )
            snapshot = str(path)
        what = what.replace("_", " ")
        raise NonFiniteLossError(
            f"{what} became {value} at step {step}"
            + (f"; debug snapshot {snapshot}" if snapshot else ""),
            step,
            snapshot,
        )
