"""Trainer overhead: nettle's Trainer vs a bare PyTorch loop on the same model, data and batches.

Both run the same number of epochs of simple-cnn on digits with SGD and a cosine schedule, the
same batches in the same order, no evaluation and no checkpoints; the Trainer also times every
phase, checks for a non-finite loss and keeps running metrics. Prints the median time of each
over several repeats and their ratio (goal <= 1.03).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F

from nettle.config import TrainConfig
from nettle.models import create_model
from nettle.train.data import create_dataset, get_dataset_info
from nettle.train.loop import Trainer

EPOCHS, BATCH, REPEATS = 4, 64, 5


def _model():
    torch.manual_seed(0)
    info = get_dataset_info("digits")
    return create_model("simple-cnn", in_channels=1, mean=info.mean, std=info.std)


def _cfg() -> TrainConfig:
    return TrainConfig(
        epochs=EPOCHS,
        device="cpu",
        tensorboard=False,
        deterministic=False,
        optim={"lr": 0.05},
        schedule={"name": "cosine"},
    )


def bare(data) -> float:
    model = _model()
    x_all, y_all = data.tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = EPOCHS * math.ceil(len(data) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    t0 = time.perf_counter()
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def ours(data) -> float:
    trainer = Trainer(_model(), data, None, _cfg(), batch_size=BATCH)
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = create_dataset("digits")
    bare(data), ours(data)  # warm-up
    b, o = [], []
    for _ in range(REPEATS):  # interleaved, so load changes hit both
        b.append(bare(data))
        o.append(ours(data))
    mb, mo = statistics.median(b), statistics.median(o)
    print(
        f"simple-cnn on digits, {EPOCHS} epochs, batch {BATCH}, {REPEATS} repeats (median, min-max)"
    )
    print(f"bare loop : {mb:.3f} s ({min(b):.3f}-{max(b):.3f})")
    print(f"Trainer   : {mo:.3f} s ({min(o):.3f}-{max(o):.3f})")
    print(f"ratio Trainer/bare: {mo / mb:.3f}  (goal <= 1.03)")


if __name__ == "__main__":
    main()
