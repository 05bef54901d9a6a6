"""Batch-1 latency of an exported student beside its eager form and its (dense) teacher.

A teacher (`--teacher`, default wrn-16-4, dense) and a student of the same network with a
substitute (`--conv`, default ACDC) are built untrained (latency does not depend on the
weights); the student is exported in each `--formats` with `export_model` (fast forms, checked
against the student to 1e-5) and loaded back. Each repeat times one batch-1 forward pass of
every model in turn (eval mode, no grad; onnxruntime for ONNX), after a warm-up call each;
rows give min / median / max milliseconds and the ratio of medians to the teacher. The load
average is printed before and after: on a shared CPU, times are noisy.

Run: `python bench/export.py [--teacher wrn-16-4] [--conv ACDC] [--formats torchscript pt2 onnx]
[--repeats 20] [--input 3x32x32]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from nettle.models import create_model
from nettle.models.export import FORMATS, export_model, load_export


def timed(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Seconds of `repeats` batch-1 calls of each model, taken round-robin after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for m in models.values():
            m(x)
        for _ in range(repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="wrn-16-4")
    parser.add_argument("--conv", default="ACDC")
    parser.add_argument("--formats", nargs="+", default=["torchscript", "pt2"], choices=FORMATS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--input", default="3x32x32")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.input.split("x"))
    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=10).eval()
    student = create_model(args.teacher, num_classes=10, conv=args.conv).eval()
    models = {f"teacher ({args.teacher})": teacher, f"student {args.conv} (eager)": student}
    example = torch.rand(2, *shape)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            path = Path(tmp) / f"student{FORMATS[fmt]}"
            result = export_model(student, example, fmt, path)
            name = f"student {args.conv} ({fmt})"
            models[name] = load_export(path.read_bytes(), fmt).eval()
            print(f"{name}: max abs diff {result.max_abs_diff:.2g}; fast forms {result.replaced}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average before: {load}; batch 1, {args.repeats} repeats, input {args.input}")
    times = timed(models, torch.rand(1, *shape), args.repeats)
    base = statistics.median(next(iter(times.values())))
    print(f"{'model':<36} {'ms min/med/max':>22} {'/teacher':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        span = "/".join(f"{1e3 * t:.2f}" for t in (min(ts), med, max(ts)))
        print(f"{name:<36} {span:>22} {med / base:>9.2f}")
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
