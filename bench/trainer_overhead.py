"""Trainer overhead: nettle's Trainer vs a bare PyTorch loop on the same model, data and batches.

Both run the same number of epochs of simple-cnn on digits (in memory, batched by indexing)
with SGD and a cosine schedule, the same number of batches of the same size, on the same
device, training only: no evaluation, no checkpoints, no metric files (`run_dir=None`). The
Trainer also times every phase (synchronising on CUDA), checks the loss for NaN/Inf, keeps
running loss/accuracy and calls the progress callback. Two widths: the default model (compute
bound) and a tiny one (width 4), where the per-step bookkeeping weighs the most. Prints the
median time of each over several interleaved repeats and their ratio (goal <= 1.03).

    python bench/trainer_overhead.py [--device cpu|cuda] [--epochs 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

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


def _cfg(epochs: int, device: str) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        device=device,
        tensorboard=False,
        deterministic=False,
        optim={"lr": 0.05},
        schedule={"name": "cosine"},
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare(data, width: int, epochs: int, device: str) -> float:
    model = _model(width, device)
    x_all, y_all = (t.to(device) for t in data.tensors)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(len(data) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    _sync(device)
    t0 = time.perf_counter()
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
    _sync(device)
    return time.perf_counter() - t0


def ours(data, width: int, epochs: int, device: str) -> float:
    trainer = Trainer(
        _model(width, device),
        data,
        None,
        _cfg(epochs, device),
        batch_size=BATCH,
        progress=lambda event, info: None,
    )
    _sync(device)
    t0 = time.perf_counter()
    trainer.fit()
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = create_dataset("digits")
    print(
        f"Trainer vs bare loop: simple-cnn on digits, {args.epochs} epochs, batch {BATCH}, "
        f"{args.device}, {torch.get_num_threads()} threads; median of {args.repeats} (min-max)"
    )
    for width in (32, 4):
        run = (data, width, args.epochs, args.device)
        bare(*run), ours(*run)  # warm-up
        b, o = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both
            b.append(bare(*run))
            o.append(ours(*run))
        mb, mo = statistics.median(b), statistics.median(o)
        print(
            f"width {width:>2}: bare loop {mb:.3f} s ({min(b):.3f}-{max(b):.3f}), "
            f"Trainer {mo:.3f} s ({min(o):.3f}-{max(o):.3f}), "
            f"ratio {mo / mb:.3f}  (goal <= 1.03)"
        )


if __name__ == "__main__":
    main()
