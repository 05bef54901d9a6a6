"""The training loop shared by every kind of run (teacher, student, adversarial, Bayesian).

One step: `data` (next batch, augmentation on the device) -> the objective (`forward`, and
whatever phases it adds, e.g. `attack` or `teacher`) -> `backward` -> `update` (clipping, the
optional gradient guard, optimiser and per-iteration scheduler step). Each phase is timed with
`PhaseTimer` (device-synchronised on CUDA); each epoch record holds the phase totals, their
shares and the per-step medians, and goes to `metrics.jsonl` and TensorBoard (`tb/`) through
`metrics.py`, and to the `progress` callback. The library never prints.

Execution (`precision.py`, `execution.py`): the objective runs under the autocast of
`train.precision` (fp16 adds a gradient scaler: scaled backward, unscaled gradients before
clipping and the guards, overflowing steps skipped; its state is checkpointed), and so does the
evaluation after each epoch; `train.channels_last` puts the model and each 4-D batch in
channels_last format; `train.compile` calls a `torch.compile`d model, each step with a new batch
shape timed as one `compile` phase, and falls back to eager (one warning) where compiling fails.

Per-step cost: the loss is read once a step (`float`, the one device sync on CUDA: the NaN
guard and the progress callback need it); the correct predictions stay on the device and are
counted once an epoch (and when a checkpoint is taken); the phases are timed with one small
context object each. `bench/trainer_overhead.py` compares the loop with a bare one.

The order of examples comes from a permutation seeded by (seed, epoch) (`sampler.py`), so a run
resumed from a checkpoint taken in the middle of an epoch continues at the exact batch, with the
exact random states: its final weights equal those of an uninterrupted run, bit for bit on the
CPU. Under `torchrun` each rank trains on its shard of the same order, the model wrapped in
DistributedDataParallel; rank 0 alone writes files (`distributed.py`). `train.deterministic`
requests deterministic kernels (warning where an op has none; on CUDA `CUBLAS_WORKSPACE_CONFIG`
is set unless already set); bit-exactness is tested on the CPU only.

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

from nettle.config import TrainConfig
from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer
from nettle.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from nettle.train.distributed import (
    all_gather_objects,
    broadcast_buffers,
    rank,
    reduce_sums,
    resolve_device,
    world_size,
    wrap_model,
)
from nettle.train.execution import Compiled, channels_last_input, to_channels_last
from nettle.train.guards import (
    NonFiniteLossError,
    clip_gradients,
    grad_norm,
    save_nonfinite_snapshot,
)
from nettle.train.metrics import MetricsWriter, evaluate, flatten_phases
from nettle.train.objectives import CrossEntropy, Objective
from nettle.train.optim import build_optimizer
from nettle.train.precision import MixedPrecision
from nettle.train.sampler import device_tensors, epoch_order, iterate_batches
from nettle.train.schedules import create_scheduler, schedule_factor

__all__ = ["Trainer", "build_optimizer", "evaluate", "resolve_device"]

log = logging.getLogger(__name__)

# outputs (elements) that may wait for their correct-prediction count: 16 MB of float32
_PENDING_LIMIT = 2**22

Progress = Callable[[str, dict[str, Any]], None]


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
        num_workers: DataLoader worker processes (data sets without `.tensors`).

    In a distributed run (a process group started by `distributed.init_distributed`)
    `batch_size` is per rank: the global batch is `batch_size * world_size()`; BatchNorm
    layers use per-rank batch statistics (plain DDP).
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
        self.amp = MixedPrecision(cfg.precision, self.device)  # autocast (+ fp16 scaler)
        self.rank, self.world = rank(), world_size()
        self.model = model.to(self.device)
        if cfg.channels_last:
            to_channels_last(self.model)
        self.net = self.model  # what the objective calls: the model, its DDP wrapper, compiled
        if self.world > 1:
            self.net = wrap_model(self.model, self.device)
            self.model = self.net.module
        self._compiled = Compiled(self.net, self.model) if cfg.compile else None
        if self._compiled is not None:
            self.net = self._compiled.net
        self.train_data, self.test_data = train_data, test_data
        self.batch_size, self.eval_batch_size, self.num_workers = (
            batch_size,
            eval_batch_size,
            num_workers,
        )
        self.objective = objective or CrossEntropy(cfg.label_smoothing)
        self.optimizer = build_optimizer(param_groups or self.model.parameters(), cfg.optim)
        self.shard_size = len(train_data) // self.world  # the epoch's examples on this rank
        self.batches_per_epoch = max(1, math.ceil(self.shard_size / batch_size))
        self.replays = int(getattr(self.objective, "replays", 1))  # "free" training
        self.total_steps = cfg.epochs * self.batches_per_epoch * self.replays
        self.scheduler = create_scheduler(
            self.optimizer, cfg.schedule, self.total_steps, self.batches_per_epoch
        )
        self.snapshot_steps = self._lr_minima() if cfg.snapshots else set()
        self.augment = augment
        self.aug_gen = torch.Generator(device=self.device) if augment is not None else None
        if self.aug_gen is not None:
            self.aug_gen.manual_seed(cfg.seed + 1 + 7919 * self.rank)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config_record = config_record or {}
        self.progress = progress or (lambda event, info: None)
        self.timer = PhaseTimer(self.device)
        self.phase_totals: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "batch": 0, "best_acc": None}
        self._running = {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        # per-step correct masks, or the outputs to take them from: counted together at the
        # epoch's end (or once `_PENDING_LIMIT` output elements wait), one device read
        self._correct: list[torch.Tensor] = []
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_size = 0
        self.metrics = MetricsWriter(self.run_dir, cfg.tensorboard, enabled=self.rank == 0)
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
        """Everything needed to continue exactly from here (in a distributed run every rank
        must call it: it gathers the random states of all ranks into `rng_ranks`)."""
        extra = getattr(self.objective, "extra_state", None)
        ranks = {}
        if self.world > 1:
            ranks["rng_ranks"] = all_gather_objects(capture_rng(self.aug_gen))
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.amp.state_dict(),
            "rng": capture_rng(self.aug_gen),
            "state": {**self.state, "running": dict(self._tally())},
            "phase_totals": dict(self.phase_totals),
            "history": list(self.history),
            "objective": extra() if callable(extra) else {},
            "config": self.config_record,
            **ranks,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint made by `state_dict`."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.amp.load_state_dict(ckpt.get("scaler"))
        state = dict(ckpt["state"])
        self._running = dict(state.pop("running"))
        self._correct.clear()
        self._pending.clear()
        self._pending_size = 0
        self.state = state
        self.phase_totals = dict(ckpt.get("phase_totals", {}))
        self.history = list(ckpt["history"])
        load_extra = getattr(self.objective, "load_extra_state", None)
        if callable(load_extra):
            load_extra(ckpt.get("objective", {}))
        rngs = ckpt.get("rng_ranks")
        mine = rngs[self.rank] if rngs and len(rngs) == self.world else ckpt["rng"]
        restore_rng(mine, self.aug_gen)

    def save(self, name: str = "last.pt") -> Path | None:
        """Write `checkpoints/<name>` (rank 0 only; every rank must call it)."""
        if self.checkpoint_dir is None:
            return None
        state = self.state_dict()
        return save_checkpoint(state, self.checkpoint_dir / name) if self.rank == 0 else None

    def resume(self, path: str | Path | None = None) -> bool:
        """Load `path` (default `checkpoints/last.pt` if present); whether anything was loaded."""
        if not path and self.checkpoint_dir is not None:
            path = self.checkpoint_dir / "last.pt"
        path = Path(path) if path else None
        if path is None or not path.is_file():
            # killed before its first checkpoint: the lines it wrote are of steps it repeats
            self.metrics.truncate(0)
            return False
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
        self.metrics.truncate(self.state["step"])
        return True

    # --- training -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns a summary (status, metrics, phase totals)."""
        previous = torch.are_deterministic_algorithms_enabled()
        if self.cfg.deterministic and self.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(self.cfg.deterministic, warn_only=True)
        self.metrics.open(self.state["step"])
        where = {k: self.state[k] for k in ("step", "epoch")}
        self.progress("start", {"epochs": self.cfg.epochs, "steps": self.total_steps, **where})
        try:
            while self.state["epoch"] < self.cfg.epochs:
                self._train_epoch(self.state["epoch"])
            if self.history:  # trained to the end in this process: the HParams view
                self.metrics.write_hparams(self.config_record, self.history[-1])
        finally:
            torch.use_deterministic_algorithms(previous)
            self.metrics.close()
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
        if self.world > 1:  # equal shards of the same order: rank r takes r, r + world, ...
            order = order[: self.shard_size * self.world][self.rank :: self.world]
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
        self.net.train()
        for _ in range(math.ceil(len(order) / self.batch_size)):
            with self.timer.phase("data"):
                x, y = next(batches)
                if self.augment is not None:
                    x = self.augment(x, self.aug_gen)
                if self.cfg.channels_last:
                    x = channels_last_input(x)
            for replay in range(self.replays):
                self._step(epoch, x, y, last_replay=replay == self.replays - 1)
        self._running["time"] += time.perf_counter() - t0
        self._end_epoch(epoch)

    def _step(self, epoch: int, x: torch.Tensor, y: torch.Tensor, last_replay: bool = True) -> None:
        compiled = self._compiled
        if compiled is not None and compiled.is_new(x):  # compiles: timed as a whole
            with self.timer.phase("compile"), self.timer.suspended():
                out, loss = compiled.first_call(lambda net: self._forward_backward(net, x, y), x)
                self._update(x, y)
            self.net = compiled.net  # the eager module if compiling failed
        else:
            out, loss = self._forward_backward(self.net, x, y)
            with self.timer.phase("update"):
                self._update(x, y)
        n = y.shape[0]
        self._running["loss"] += loss * n
        if out.correct is not None:
            self._correct.append(out.correct)  # no device read per step: `_tally` counts them
        else:  # the argmax too waits, for one over many steps' outputs
            self._pending.append((out.logits.detach(), y))
            self._pending_size += out.logits.numel()
            if self._pending_size > _PENDING_LIMIT:
                self._take_pending()
        self._running["seen"] += n
        self.state["step"] += 1
        self.state["batch"] += int(last_replay)
        step = self.state["step"]
        lr = self.optimizer.param_groups[0]["lr"]
        if step % self.cfg.log_every == 0:
            parts = {"loss": loss, **{k: float(v) for k, v in out.parts.items()}}
            if self.world > 1:  # the mean over the global batch (equal per-rank batches)
                parts = {k: v / self.world for k, v in reduce_sums(parts, self.device).items()}
            self.metrics.write(
                {"kind": "step", "step": step, "epoch": epoch + 1, "lr": lr, **parts}
            )
        snapshot = step in self.snapshot_steps and last_replay and self.rank == 0
        if snapshot and self.checkpoint_dir is not None:
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

    def _forward_backward(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
        """The objective under the run's autocast, the loss guard, and `backward`."""
        with self.amp.autocast():
            out: LossOutput = self.objective(net, x, y, self.timer)
        loss = float(out.loss.detach())  # the step's one device read: the guard and progress
        if self.cfg.nan_guard and not math.isfinite(loss):
            self._nonfinite(x, y, "loss", loss)
        with self.timer.phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.amp.backward(out.loss)
        return out, loss

    def _update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Unscale (fp16), clip, check the gradient norm, step the optimiser and schedule."""
        self.amp.unscale(self.optimizer)
        norm = None
        if self.cfg.grad_clip:
            norm = clip_gradients(
                self.model.parameters(), self.cfg.grad_clip, self.cfg.grad_clip_mode
            )
        if self.cfg.nan_guard_grads and not self.amp.handles_overflow:  # fp16: the scaler skips
            norm = grad_norm(self.model.parameters()) if norm is None else norm
            if not math.isfinite(norm):
                self._nonfinite(x, y, "grad_norm", norm)
        self.amp.step(self.optimizer, self.scheduler)
        if self._after_step is not None:
            self._after_step(self.model)

    def _take_pending(self) -> None:
        """The correct masks of the waiting outputs: one argmax where their shapes agree."""
        if not self._pending:
            return
        if len({logits.shape[1:] for logits, _ in self._pending}) == 1:
            logits = torch.cat([logits for logits, _ in self._pending])
            labels = torch.cat([y for _, y in self._pending])
            self._correct.append(logits.argmax(1) == labels)
        else:
            self._correct.extend(logits.argmax(1) == y for logits, y in self._pending)
        self._pending.clear()
        self._pending_size = 0

    def _tally(self) -> dict[str, Any]:
        """The running sums, with the correct predictions of the steps since the last call
        counted (one device read for all of them)."""
        self._take_pending()
        if self._correct:
            masks = [c.reshape(-1) for c in self._correct]
            self._running["correct"] += int(torch.cat(masks).sum())
            self._correct.clear()
        return self._running

    def _end_epoch(self, epoch: int) -> None:
        r = self._tally()
        if self.world > 1:
            sums = reduce_sums({k: r[k] for k in ("loss", "correct", "seen")}, self.device)
            r = {**r, **sums}
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
            broadcast_buffers(self.model)  # rank 0's BatchNorm statistics, as checkpointed
            with self.amp.autocast():
                ev = evaluate(
                    self.model, self.test_data, self.eval_batch_size, self.device, metric, True
                )
            record.update({f"test_{k}": v for k, v in ev.items()})
            record["eval_time"] = time.perf_counter() - t0
        for name, secs in self.timer.totals().items():
            self.phase_totals[name] = self.phase_totals.get(name, 0.0) + secs
        self.history.append(record)
        self.metrics.write(flatten_phases(record))
        self.state.update(epoch=epoch + 1, batch=0)
        self._running = {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        acc, best = record.get("test_acc"), self.state["best_acc"]
        if acc is not None and self.cfg.keep_best and (best is None or acc > best):
            self.state["best_acc"] = acc
            self.save("best.pt")
        if (epoch + 1) % self.cfg.checkpoint_every == 0 or epoch + 1 == self.cfg.epochs:
            self.save()
        self.progress("epoch", record)

    def _nonfinite(self, x: torch.Tensor, y: torch.Tensor, what: str, value: float) -> None:
        """Save a debug snapshot (when writing a run dir) and stop with `NonFiniteLossError`."""
        step, snapshot = self.state["step"], None
        if self.checkpoint_dir is not None:
            suffix = f"-rank{self.rank}" if self.world > 1 else ""  # the rank that saw it
            path = self.checkpoint_dir / f"nonfinite-step{step}{suffix}.pt"
            model, opt, cfg = self.model, self.optimizer, self.config_record
            save_nonfinite_snapshot(path, model, opt, x, y, step, **{what: value}, config=cfg)
            snapshot = str(path)
        what = what.replace("_", " ")
        raise NonFiniteLossError(
            f"{what} became {value} at step {step}"
            + (f"; debug snapshot {snapshot}" if snapshot else ""),
            step,
            snapshot,
        )
