"""The order of the training examples and the batches fed to the trainer.

The order of an epoch is a permutation drawn from a generator seeded by (seed, epoch) alone, so
it does not depend on any other random state: a run resumed in the middle of an epoch recomputes
the same permutation and skips the batches it has done (`order[batch * batch_size:]`).

Data sets that expose `.tensors == (X, Y)` (a `TensorDataset`, or any in-memory set shaped like
one) are moved to the device once and batched by indexing there: no DataLoader, no worker
processes, no per-batch host-to-device copy. Any other data set goes through a `DataLoader`
whose batch sampler is the same permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["device_tensors", "epoch_order", "iterate_batches"]

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of `range(n)` used in `epoch` of a run seeded with `seed`."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def device_tensors(data: Dataset, device: torch.device) -> tuple[torch.Tensor, ...] | None:
    """`data.tensors` on `device` (not copied if already there); None for other data sets."""
    tensors = getattr(data, "tensors", None)
    if not isinstance(tensors, tuple) or not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    return tuple(t.to(device) for t in tensors)


def iterate_batches(
    data: Dataset,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    tensors: tuple[torch.Tensor, ...] | None = None,
    num_workers: int = 0,
) -> Iterator[Batch]:
    """Batches `(x, y)` of `data` on `device`, taking the examples in `order`.

    Args:
        data: the data set.
        order: indices of the examples, in the order they are wanted.
        batch_size: examples per batch (the last batch may be smaller).
        device: where the batches go.
        tensors: `device_tensors(data, device)`, when the caller keeps them between epochs.
        num_workers: DataLoader worker processes (data sets without `.tensors` only).
    """
    if tensors is None:
        tensors = device_tensors(data, device)
    if tensors is not None:
        x_all, y_all = tensors[0], tensors[1]
        order = order.to(x_all.device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield x_all[idx], y_all[idx]
        return
    batches = [order[s : s + batch_size].tolist() for s in range(0, len(order), batch_size)]
    # a generator of its own, so the loader does not draw from (and shift) the global RNG
    loader = DataLoader(
        data,
        batch_sampler=batches,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda",
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
