"""Forward+backward time of each substitute vs the dense 3x3 conv at CIFAR WRN-28-10 widths
(160 channels at 32x32, 320 at 16x16, 640 at 8x8; batch 32, CPU), next to the theoretical MAC
ratio from the cost formulas. Median of repeats after a warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

from nettle.measure import count
from nettle.nn.substitutes import create_conv

SPECS = [
    "Conv",
    "Sep",
    "Generic_0.1",
    "LR_0.1",
    "Shuffle_4",
    "Hashed_0.1",
    "SepHashed_0.2",
    "ACDC",
    "TensorTrain_0.44",
    "Tucker_0.41",
    "CP_0.5",
]
SHAPES = [(160, 32), (320, 16), (640, 8)]
BATCH, REPEATS = 32, 5


def _time(layer: torch.nn.Module, x: torch.Tensor) -> float:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    step()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    print(
        f"{'substitute':<18} {'width':>5} {'ms':>8} {'time/dense':>10} {'MACs/dense':>10} {'params/dense':>12}"
    )
    for c, hw in SHAPES:
        x = torch.rand(BATCH, c, hw, hw)
        dense_ms = dense_macs = dense_params = None
        for spec in SPECS:
            layer = create_conv(spec, c, c, 3, padding=1)
            ms = 1e3 * _time(layer, x)
            macs = count(layer, (c, hw, hw)).macs
            params = sum(p.numel() for p in layer.parameters())
            if spec == "Conv":
                dense_ms, dense_macs, dense_params = ms, macs, params
            print(
                f"{spec:<18} {c:>5} {ms:>8.1f} {ms / dense_ms:>10.2f} {macs / dense_macs:>10.3f} "
                f"{params / dense_params:>12.3f}"
            )


if __name__ == "__main__":
    main()
