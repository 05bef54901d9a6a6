"""Forward+backward time of each substitute block vs the dense 3x3 conv at WRN-28-10 widths.

CIFAR WRN-28-10 shapes: 160 channels at 32x32, 320 at 16x16, 640 at 8x8 (stride 1, padding 1),
a batch of 32 by default. Each row: the median of `--repeats` timed steps (zero grads, forward,
sum, backward) after a warm-up step, next to the ratios to the dense conv of the theoretical
multiply-adds (cost formulas, `default` convention), the executed multiply-adds and the
parameters. The machine load is printed first: on a shared CPU, times are noisy.

Run: `python bench/substitutes.py [--batch 32] [--repeats 3] [--device cuda] [--specs Sep ...]`.
"""

from __future__ import annotations

import argparse
import copy
import os
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
    "HashedDecimate",
    "SepHashed_0.2",
    "SepHashedDecimate",
    "ACDC",
    "TensorTrain_0.44",
    "Tucker_0.41",
    "CP_0.5",
]
SHAPES = [(160, 32), (320, 16), (640, 8)]  # (channels, spatial size)


def time_step(layer: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of a forward+backward step after one warm-up step."""

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--specs", nargs="+", default=SPECS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cpus"
    )
    print(f"load average before: {load}; batch {args.batch}, median of {args.repeats}")
    header = f"{'substitute':<18} {'C@HxW':>8} {'ms':>9} {'time/dense':>10} {'MACs/dense':>10}"
    print(header + f" {'exec/dense':>10} {'params/dense':>12}")
    specs = ["Conv"] + [s for s in args.specs if s != "Conv"]
    for c, hw in SHAPES:
        x = torch.rand(args.batch, c, hw, hw, device=args.device)
        base = None
        for spec in specs:
            layer = create_conv(spec, c, c, 3, padding=1, device=args.device)
            ms = 1e3 * time_step(layer, x, args.repeats)
            meta = copy.deepcopy(layer).to("meta")  # counting needs shapes only
            cost = count(meta, (c, hw, hw), batch_size=args.batch)
            row = (ms, cost.macs, cost.macs_executed, cost.params)
            base = base or row
            macs, executed, params = (a / b for a, b in zip(row[1:], base[1:], strict=True))
            ratios = f"{macs:>10.3f} {executed:>10.3f} {params:>12.4f}"
            print(f"{spec:<18} {f'{c}@{hw}x{hw}':>8} {ms:>9.1f} {ms / base[0]:>10.2f} {ratios}")
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
