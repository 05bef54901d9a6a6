"""Data-parallel training over several processes (`torchrun`), with DistributedDataParallel.

`nettle train CONFIG -o DIR` runs unchanged under

    torchrun --nproc-per-node 2 -m nettle train CONFIG -o DIR

`torchrun` starts one process per device and sets `RANK`, `WORLD_SIZE` and `LOCAL_RANK` (and
the rendezvous address) in each. `init_distributed` (called by `run_experiment`) sees them,
starts the process group (NCCL when the device is CUDA, Gloo on the CPU) and returns the
process's device: `cuda:LOCAL_RANK`, or the CPU. Without those variables (or with a world of
one) nothing is started and every helper here answers as for a single process, so the
single-process path is unchanged.

What the trainer does with several processes (see `loop.py`):
- every rank computes the same seeded permutation of the epoch and takes the positions
  `rank::world` of its first `world * (n // world)` entries: equal shards, the last
  `n % world` examples of each epoch's (reshuffled) order are dropped (never padded, so no
  example counts twice in an epoch). The global batch is `batch_size * world`; with equal
  per-rank batches DDP's gradient average is the mean over the global batch, as one process
  with that batch size would compute. Scale the learning rate with the global batch (the
  linear rule: `lr * world` for SGD when `batch_size` per rank is kept).
- evaluation splits the test set the same way (`rank::world`, nothing dropped) and adds the
  metric sums of every rank, so the test metrics are those of the whole test set.
- rank 0 alone writes checkpoints, `metrics.jsonl`, TensorBoard, `env.json`, `summary.json`;
  a checkpoint holds the random states of every rank; every rank resumes from rank 0's file.
- step records hold the loss averaged over the ranks; a NaN/Inf loss stops the rank that sees
  it (snapshot `nonfinite-step<N>-rank<r>.pt`) and `torchrun` then stops the others.
- objectives receive the DDP wrapper (adversarial attacks run through it); `run_experiment`
  refuses distill runs under `torchrun`: their attention points are hooked by submodule name,
  which the wrapper prefixes with `module.`.
- each worker asks Linux to SIGKILL it when its `torchrun` parent dies (`PR_SET_PDEATHSIG`):
  `torchrun` starts its workers in sessions of their own, so killing the launcher's process
  group (as a scheduler does) would otherwise leave them running, holding their devices.
- BatchNorm keeps per-rank batch statistics (plain DDP: DDP broadcasts rank 0's buffers at
  each forward); rank 0's running statistics are broadcast again before each evaluation, so
  every rank evaluates the weights that rank 0 checkpoints. (No SyncBatchNorm option yet: torch's
  SyncBatchNorm needs GPUs.)
"""

from __future__ import annotations

import ctypes
import datetime
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_gather_objects",
    "barrier",
    "broadcast_buffers",
    "distributed_session",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launched",
    "rank",
    "reduce_sums",
    "resolve_device",
    "shutdown",
    "world_size",
    "wrap_model",
]

log = logging.getLogger(__name__)


def launched() -> bool:
    """Whether this process was started by `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if is_distributed():
        dist.barrier()


def init_distributed(device: str = "auto") -> torch.device | None:
    """Start the process group of a `torchrun` launch; None when not launched.

    Args:
        device: the configured device: "auto" or "cuda..." give `cuda:LOCAL_RANK` (NCCL) when
            CUDA is available; "cpu" (or no CUDA) gives the CPU (Gloo).

    Returns:
        This process's device, or None for a single-process run.
    """
    if not launched():
        return None
    _die_with_parent()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device!r} but CUDA is not available on this rank")
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),
            **({"device_id": dev} if cuda else {}),
        )
    log.info("rank %d of %d on %s", rank(), world_size(), dev)
    return dev


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the `torchrun` agent) dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("could not ask to be stopped with the torchrun agent")
        return
    if os.getppid() != parent:  # the agent died before the request: stop now
        os.kill(os.getpid(), signal.SIGKILL)


def shutdown() -> None:
    """Wait for every rank, then destroy the process group (nothing without one)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[torch.device | None]:
    """`init_distributed(device)` on entry, `shutdown()` on a clean exit.

    On an error the group is not waited for (the other ranks would hang at the barrier);
    `torchrun` stops the remaining processes when one fails.
    """
    dev = init_distributed(device)
    yield dev
    if dev is not None:
        shutdown()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (its `.module` is `model`).

    The wrapper shares the parameters of `model`; DDP broadcasts rank 0's parameters and
    buffers when it wraps, so every rank starts from the same weights.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def reduce_sums(sums: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
    """`sums` added over every rank (same keys on each; ints stay ints); unchanged alone."""
    if not is_distributed():
        return sums
    keys = list(sums)
    dev = device if device is not None and dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return {k: round(v) if isinstance(sums[k], int) else v for k, v in zip(keys, t.tolist())}


def all_gather_objects(obj: Any) -> list[Any]:
    """The `obj` of every rank, in rank order (`[obj]` alone); tensors come back on the CPU."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank."""
    if not is_distributed():
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """`"auto"` is CUDA when available, else CPU; anything else is passed to torch. In a
    distributed run "auto" and "cuda" are this rank's GPU (`cuda:LOCAL_RANK`). A device this
    machine lacks is one `ValueError` line naming `option` (the field or flag it came from)."""
    if name in ("auto", "cuda") and is_distributed() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{option} {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {name!r}: no CUDA GPU is visible here; use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"{option} {name!r}: this machine has {count} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} {name!r}: MPS is not available here; use cpu or auto")
    return device
