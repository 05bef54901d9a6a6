"""Time of each substitute block vs the dense 3x3 conv at WRN-28-10 widths, training or inference.

CIFAR WRN-28-10 shapes: 160 channels at 32x32, 320 at 16x16, 640 at 8x8 (stride 1, padding 1),
a batch of 32 by default. Training (default): a step is zero grads, forward, sum, backward.
`--eval`: a step is one forward pass in eval mode under `torch.no_grad()`, where substitutes
that rebuild a weight use their cached fast form; each row then shows the goal
`max(2 x MAC ratio, 1)` (hashed layers: 1.05, they run the dense convolution) and whether the
median time ratio meets it, and ACDC's alternatives are timed beside it (cached 1x1, rebuilding
the N x N map per call, the FFT chain per pixel, the folded dense k x k conv).
Rows: min / median / max of `--repeats` timed steps after a warm-up step, each step timed in
turn with a step of the dense conv (so that both see the same load), the ratio of the medians
to that dense conv's, and the ratios of theoretical multiply-adds (cost formulas, `default`
convention), executed multiply-adds and parameters. The load average is printed before and
after: on a shared CPU, times are noisy.

Run: `python bench/substitutes.py [--eval] [--batch 32] [--repeats 5] [--device cuda]
[--specs Sep ...]`.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from nettle.measure import count
from nettle.nn.substitutes import create_conv
from nettle.nn.substitutes.acdc import acdc_chain

SPECS = [
    "Conv",
    "Sep",
    "Generic_0.1",
    "LR_0.1",
    "Shuffle_4",
    "Hashed_0.1",
    "HashedDecimate",
    "SepHashed_0.2",
    "SepHashedDecimate",
    "ACDC",
    "OriginalACDC",
    "TensorTrain_0.44",
    "TensorTrain4_0.8",
    "Tucker_0.41",
    "CP_0.5",
]
SHAPES = [(160, 32), (320, 16), (640, 8)]  # (channels, spatial size)


def time_calls(steps: list[Callable[[], None]], repeats: int, cuda: bool) -> list[list[float]]:
    """Seconds of `repeats` calls of each step, taken in turn (paired against drifting load),
    after one warm-up call each."""

    def run(step: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for step in steps:
        run(step)
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            times[i].append(run(step))
    return times


def training_step(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    return step


def inference_step(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    layer.eval()

    def step() -> None:
        with torch.no_grad():
            layer(x)

    return step


def acdc_alternatives(layer: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """ACDC's inference paths: the cached 1x1, a rebuild per call, the FFT chain per pixel,
    the folded dense conv."""
    rebuild = copy.deepcopy(layer).train()  # training mode: the N x N map is built per call
    dense = layer.to_dense().eval()

    def chain() -> None:
        with torch.no_grad():
            y = layer.spatial(x).permute(0, 2, 3, 1)
            acdc_chain(y, layer.A, layer.D, layer.inner, layer.perm)

    def no_grad(module: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                module(x)

        return step

    return {
        "cached 1x1": inference_step(layer, x),
        "rebuild/call": no_grad(rebuild),
        "FFT chain": chain,
        "dense kxk": no_grad(dense),
    }


def goal(spec: str, mac_ratio: float) -> float:
    """The inference goal: time ratio <= max(2 x MAC ratio, 1); hashed <= 1.05."""
    if spec.lower().startswith("hashed"):
        return 1.05
    return max(2 * mac_ratio, 1.0)


def _ms(times: list[float]) -> str:
    return "/".join(f"{1e3 * t:.1f}" for t in (min(times), statistics.median(times), max(times)))


def _row(name: str, shape: str, times: list[float], base: float, extra: str) -> str:
    med = statistics.median(times)
    return f"{name:<24} {shape:>8} {_ms(times):>20} {med / base:>10.2f} {extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", action="store_true", help="time inference, not training")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--specs", nargs="+", default=SPECS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    mode = "inference (eval, no_grad)" if args.eval else "training step (forward+backward)"
    print(
        f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cpus; {mode}"
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average before: {load}; batch {args.batch}, {args.repeats} repeats")
    header = f"{'substitute':<24} {'C@HxW':>8} {'ms min/med/max':>20} {'time/dense':>10}"
    tail = f" {'goal':>6} {'met':>4}" if args.eval else ""
    print(header + f" {'MACs/dense':>10} {'exec/dense':>10} {'params/dense':>12}" + tail)
    specs = ["Conv"] + [s for s in args.specs if s != "Conv"]
    missed = []
    make = inference_step if args.eval else training_step
    for c, hw in SHAPES:
        x = torch.rand(args.batch, c, hw, hw, device=args.device)
        shape = f"{c}@{hw}x{hw}"
        dense = create_conv("Conv", c, c, 3, padding=1, device=args.device)
        base_cost = count(copy.deepcopy(dense).to("meta"), (c, hw, hw), batch_size=args.batch)
        for spec in specs:
            layer = create_conv(spec, c, c, 3, padding=1, device=args.device)
            meta = copy.deepcopy(layer).to("meta")  # counting needs shapes only
            cost = count(meta, (c, hw, hw), batch_size=args.batch)
            steps = [make(dense, x), make(layer, x)]  # each spec timed in turn with the dense conv
            if args.eval and spec.lower().endswith("acdc"):
                alternatives = acdc_alternatives(layer, x)
                steps += list(alternatives.values())
            dense_times, times, *alt_times = time_calls(steps, args.repeats, cuda)
            base = statistics.median(dense_times)
            ratios = [
                a / b
                for a, b in zip(
                    (cost.macs, cost.macs_executed, cost.params),
                    (base_cost.macs, base_cost.macs_executed, base_cost.params),
                    strict=True,
                )
            ]
            extra = f"{ratios[0]:>10.3f} {ratios[1]:>10.3f} {ratios[2]:>12.4f}"
            if args.eval:
                target, ratio = goal(spec, ratios[0]), statistics.median(times) / base
                met = "yes" if ratio <= target else "NO"
                extra += f" {target:>6.2f} {met:>4}"
                if met == "NO":
                    missed.append(f"{spec} at {shape}: {ratio:.2f} > {target:.2f}")
            print(_row(spec, shape, times, base, extra), flush=True)
            if alt_times:
                for name, alt in zip(alternatives, alt_times, strict=True):
                    print(_row(f"  {spec} {name}", shape, alt, base, ""), flush=True)
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.eval:
        print("goals missed: " + ("; ".join(missed) if missed else "none"))


if __name__ == "__main__":
    main()
