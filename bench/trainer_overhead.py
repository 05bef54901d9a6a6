"""Trainer overhead: nettle's Trainer vs a bare PyTorch loop on the same model, data and batches.

Both run the same number of epochs of simple-cnn on digits (in memory, batched by indexing)
with SGD and a cosine schedule, the same number of batches of the same size, on the same
device, training only: no evaluation, no checkpoints, no metric files (`run_dir=None`). The
Trainer also times every phase (synchronising on CUDA), checks the loss for NaN/Inf, keeps
running loss/accuracy and calls the progress callback. Two widths: the default model (compute
bound) and a tiny one (width 4), where the per-step bookkeeping weighs the most. Each repeat
runs both, interleaved, so that a change of the machine's load hits both; the table gives the
median (min-max) of the wall time and of the process's CPU time, and the ratios of the medians
and of the minima (goal <= 1.03). The CPU time is the steadier figure on a busy machine; one
intra-op thread (the default here) keeps two threads from spinning for each tiny op.

Then the Trainer in bf16 (CPU autocast) against fp32: images per second, median of the repeats.
On a CPU without bfloat16 matrix units bf16 is usually slower: it is there to be measured.

    python bench/trainer_overhead.py [--device cpu|cuda] [--epochs 2] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nettle.config import TrainConfig
from nettle.models import create_model
from nettle.train.data import create_dataset, get_dataset_info
from nettle.train.loop import Trainer

BATCH = 64


def _model(width: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    info = get_dataset_info("digits")
    model = create_model("simple-cnn", in_channels=1, mean=info.mean, std=info.std, width=width)
    return model.to(device)


def _cfg(epochs: int, device: str, precision: str = "fp32") -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        device=device,
        tensorboard=False,
        deterministic=False,
        optim={"lr": 0.05},
        schedule={"name": "cosine"},
        precision=precision,
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare(data, width: int, epochs: int, device: str) -> Callable[[], None]:
    """The bare loop, ready to run (model, optimiser and schedule built)."""
    model = _model(width, device)
    x_all, y_all = (t.to(device) for t in data.tensors)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(len(data) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )

    def train() -> None:
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
            order = order.to(device)
            for start in range(0, len(order), BATCH):
                idx = order[start : start + BATCH]
                loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()

    return train


def ours(
    data, width: int, epochs: int, device: str, precision: str = "fp32"
) -> Callable[[], object]:
    """The Trainer's `fit`, ready to run (the Trainer built)."""
    trainer = Trainer(
        _model(width, device),
        data,
        None,
        _cfg(epochs, device, precision),
        batch_size=BATCH,
        progress=lambda event, info: None,
    )
    return trainer.fit


def _timed(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `fn()` (training only: built before)."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def overhead(data, width: int, args: argparse.Namespace) -> None:
    run = (data, width, args.epochs, args.device)
    bare(*run)(), ours(*run)()  # warm-up
    b, o = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both
        b.append(_timed(bare(*run), args.device))
        o.append(_timed(ours(*run), args.device))
    for k, clock in enumerate(("wall", "cpu")):
        bs, os_ = [t[k] for t in b], [t[k] for t in o]
        print(
            f"| {width} | {clock} | {_spread(bs)} | {_spread(os_)} | "
            f"{statistics.median(os_) / statistics.median(bs):.3f} | {min(os_) / min(bs):.3f} |"
        )


def precision_speed(data, width: int, args: argparse.Namespace) -> None:
    run = (data, width, args.epochs, args.device)
    images = args.epochs * len(data)
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for p in rates:
        ours(*run, precision=p)()  # warm-up
    for _ in range(args.repeats):
        for p, r in rates.items():
            r.append(images / _timed(ours(*run, precision=p), args.device)[0])
    f32, b16 = (statistics.median(rates[p]) for p in ("fp32", "bf16"))
    print(
        f"| {width} | {f32:.0f} ({min(rates['fp32']):.0f}-{max(rates['fp32']):.0f}) | "
        f"{b16:.0f} ({min(rates['bf16']):.0f}-{max(rates['bf16']):.0f}) | {b16 / f32:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = create_dataset("digits")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"Trainer vs bare loop: simple-cnn on digits, {args.epochs} epochs, batch {BATCH}, "
        f"{args.device}, {torch.get_num_threads()} thread(s), {args.repeats} repeats; "
        f"load average {load}\n"
    )
    print(
        "| width | clock | bare loop s, median (min-max) | Trainer s | ratio of medians | "
        "ratio of minima |\n|---|---|---|---|---|---|"
    )
    for width in (32, 4):
        overhead(data, width, args)
    print(f"\nTrainer images/s, fp32 vs bf16 autocast on {args.device} (median (min-max))\n")
    print("| width | fp32 | bf16 | bf16 / fp32 |\n|---|---|---|---|")
    for width in (32, 4):
        precision_speed(data, width, args)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nload average at the end {load} (goal: ratio <= 1.03)")


if __name__ == "__main__":
    main()
