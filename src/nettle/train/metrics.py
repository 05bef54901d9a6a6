"""Test metrics (`evaluate`) and where the trainer's records go: `metrics.jsonl`, TensorBoard.

One JSON object per line: step records (`kind: "step"`, every `train.log_every` steps) and epoch
records (`kind: "epoch"`, with the phase totals flattened into `phase_<name>`,
`phase_<name>_share` and `phase_<name>_median`). Every numeric field but `step` and `epoch` is
also a TensorBoard scalar `<kind>/<field>` at the record's step. A writer without a run dir, or
a disabled one (ranks other than 0 of a distributed run), writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from nettle.config import ConfigError
from nettle.files import atomic_write
from nettle.nn.modes import eval_mode
from nettle.train.distributed import is_distributed, rank, reduce_sums, world_size
from nettle.train.objectives import ClassificationMetric, EvalMetric
from nettle.train.sampler import iterate_batches

__all__ = ["MetricsWriter", "evaluate", "flatten_phases"]


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _step(line: str) -> float:
    """The step of a metrics line; infinite for a line cut off by a kill (dropped)."""
    try:
        record = json.loads(line)
    except ValueError:
        return float("inf")
    return record.get("step", 0) if isinstance(record, dict) else float("inf")


def flatten_phases(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record for `metrics.jsonl`: `phase_<name>` seconds, `_share`, `_median`."""
    flat = {k: v for k, v in record.items() if k not in ("phases", "phase_shares", "phase_medians")}
    for name, secs in record["phases"].items():
        flat[f"phase_{name}"] = secs
        flat[f"phase_{name}_share"] = record["phase_shares"][name]
        flat[f"phase_{name}_median"] = record["phase_medians"][name]
    return flat


class MetricsWriter:
    """Appends metric records to `run_dir/metrics.jsonl` and, when opened with TensorBoard, to
    `run_dir/tb/`.

    Args:
        run_dir: the run dir (None: write nothing).
        tensorboard: also write TensorBoard events (opened by `open`).
        enabled: False writes nothing (e.g. on ranks other than 0).
    """

    def __init__(self, run_dir: Path | None, tensorboard: bool = True, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl" if run_dir is not None and enabled else None
        self.tensorboard = tensorboard
        self._tb: Any = None

    def open(self, step: int) -> None:
        """Open TensorBoard, dropping events after `step` (those of a run resumed from there).

        Raises:
            ConfigError: TensorBoard is asked for but not installed.
        """
        if self.path is None or not self.tensorboard or self._tb is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard is true but TensorBoard is not installed: "
                "pip install 'nettle[tensorboard]' (or set train.tensorboard=false)"
            ) from None

        self._tb = SummaryWriter(str(self.path.parent / "tb"), purge_step=step or None)

    def close(self) -> None:
        """Flush and close TensorBoard (the JSON lines are written at once)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def write_hparams(self, config: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Write the run's hyper-parameters (the config's scalar leaves as dotted keys) with
        its final numeric metrics to TensorBoard's HParams view (once, at the end)."""
        if self._tb is None:
            return
        hparams = {
            k: v
            for k, v in _flat(config).items()
            if isinstance(v, (bool, int, float, str)) and k != "name"
        }
        final = {
            f"hparam/{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and k not in ("step", "epoch")
        }
        self._tb.add_hparams(hparams, final, run_name=".")

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (with `kind` and `step`) as one JSON line and its scalars to TB."""
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def truncate(self, step: int) -> None:
        """Drop lines written after `step` (a run resumed from there repeats none)."""
        if self.path is None or not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines() if _step(line) <= step]
        atomic_write(self.path, "".join(line + "\n" for line in keep))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    batch_size: int = 256,
    device: torch.device | None = None,
    metric: EvalMetric | None = None,
    distributed: bool = False,
) -> dict[str, float]:
    """`metric` of `model` on `data` (eval mode, restored after); default `ClassificationMetric`
    (mean cross-entropy, accuracy and, over more than 5 classes, `top5`; the trainer records
    them as `test_loss`, `test_acc`, `test_top5`).

    With `distributed` (every rank must call it) each rank evaluates the examples `rank::world`
    and the metric's additive `sums` are added over the ranks: the result is that of the whole
    of `data`."""
    device = device or next(model.parameters()).device
    metric = metric if metric is not None else ClassificationMetric()
    metric.reset()
    shard = distributed and is_distributed()
    if shard and not isinstance(getattr(metric, "sums", None), dict):
        raise TypeError(f"{type(metric).__name__}: a distributed evaluation needs `sums`")
    order = torch.arange(rank(), len(data), world_size()) if shard else torch.arange(len(data))
    with eval_mode(model):  # every submodule gets its own flag back (a frozen BN stays so)
        for x, y in iterate_batches(data, order, batch_size, device):
            metric.update(model(x), y)
    if shard:
        metric.sums = reduce_sums(metric.sums, device)  # type: ignore[attr-defined]
    return metric.compute()
