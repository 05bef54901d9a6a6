"""Counting speed and agreement: nettle's count vs fvcore and ptflops.

For wrn-28-10 (3x32x32) and resnet50 (3x224x224): median wall time of each counter over a few
repeats after a warm-up (with the spread, max - min), its time relative to ours, and the
multiply-add counts side by side. fvcore counts one fused multiply-add as one "flop"; ptflops'
"MACs" add bias, norm, activation and pooling ops; ours is the `default` convention
(multiply-adds only). `nettle (meta)` counts the same model moved to the meta device, where no
arithmetic runs.

Run: `python bench/count_speed.py [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from nettle.measure import count
from nettle.models import create_model


def _time(fn: Callable[[], int], repeats: int) -> tuple[float, float, int]:
    """Median seconds, spread (max - min) and the value, after one warm-up call."""
    value = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times), int(value)


def _counters(model: torch.nn.Module, shape: tuple[int, ...]) -> list[tuple[str, Callable]]:
    with warnings.catch_warnings():  # fvcore's import warns about torch.jit
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from ptflops import get_model_complexity_info

    x = torch.rand(1, *shape)
    meta = copy.deepcopy(model).to("meta")

    def fvcore_count() -> int:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            a = FlopCountAnalysis(model, x)
            a.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return a.total()

    def ptflops_count() -> int:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            macs, _ = get_model_complexity_info(
                model, shape, as_strings=False, print_per_layer_stat=False
            )
        return macs

    return [
        ("nettle", lambda: count(model, shape).macs),
        ("nettle (meta)", lambda: count(meta, shape).macs),
        ("fvcore", fvcore_count),
        ("ptflops", ptflops_count),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    head = (
        f"{'model':<10} {'counter':<14} {'median s':>9} {'spread s':>9} {'x ours':>7} {'MACs':>16}"
    )
    print(head)
    for name, shape, classes in (("wrn-28-10", (3, 32, 32), 10), ("resnet50", (3, 224, 224), 1000)):
        model = create_model(name, num_classes=classes).eval()
        rows = [(counter, *_time(fn, args.repeats)) for counter, fn in _counters(model, shape)]
        ours = rows[0][1]
        for counter, secs, spread, macs in rows:
            print(
                f"{name:<10} {counter:<14} {secs:>9.3f} {spread:>9.3f} {secs / ours:>7.2f} "
                f"{macs:>16,}"
            )


if __name__ == "__main__":
    main()
