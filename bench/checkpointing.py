"""Memory of one training step with and without activation checkpointing.

WRN-16-4 (dense and with the ACDC substitute, which builds large intermediate tensors) on a
batch of 16 CIFAR-size images, CPU, with `checkpoint_blocks` off and on: the bytes of tensors
kept for the backward pass during the forward pass (what checkpointing trades for recompute;
counted with `saved_tensors_hooks`, each storage once) and the step time. (Resident-set peaks
are not shown: after a warm-up the CPU allocator serves the step from blocks it already holds,
so they say little; on CUDA use `MemoryMeter`, which reads the allocator's peak.)
"""

from __future__ import annotations

import gc
import time

import torch

from nettle.models import create_model
from nettle.nn.checkpointing import checkpoint_blocks


def step_memory(conv: str | None, ckpt: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    model = create_model("wrn-16-4", conv=conv).train()
    if ckpt:
        checkpoint_blocks(model)
    x = torch.rand(16, 3, 32, 32)
    model(x).sum().backward()  # warm-up: allocator caches and gradient buffers
    model.zero_grad(set_to_none=False)
    gc.collect()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).sum()
    loss.backward()
    return sum(saved.values()) / 2**20, time.perf_counter() - t0


def main() -> None:
    print(f"{'model':<16} {'ckpt':<5} {'saved for backward MiB':>23} {'step s':>7}")
    for conv in (None, "ACDC"):
        for ckpt in (False, True):
            saved, secs = step_memory(conv, ckpt)
            label = f"wrn-16-4 {conv or 'dense'}"
            print(f"{label:<16} {'on' if ckpt else 'off':<5} {saved:>23.1f} {secs:>7.2f}")


if __name__ == "__main__":
    main()
