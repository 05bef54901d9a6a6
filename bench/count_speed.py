"""Counting speed and agreement: nettle's count vs fvcore and ptflops.

For wrn-28-10 (3x32x32) and resnet50 (3x224x224): median wall time of each counter over a few
repeats after a warm-up, their time ratio to ours, and the three multiply-add counts side by
side (fvcore counts one fused multiply-add as one "flop"; ptflops' "MACs" add bias, norm,
activation and pooling ops; ours is the `default` convention: multiply-adds only).
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings

import torch

from nettle.measure import count
from nettle.models import create_model

REPEATS = 3


def _time(fn) -> tuple[float, int]:
    value = fn()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), int(value)


def _counters(model: torch.nn.Module, shape: tuple[int, ...]) -> list[tuple[str, object]]:
    from fvcore.nn import FlopCountAnalysis
    from ptflops import get_model_complexity_info

    x = torch.rand(1, *shape)

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
        ("fvcore", fvcore_count),
        ("ptflops", ptflops_count),
    ]


def main() -> None:
    print(f"{'model':<10} {'counter':<9} {'median s':>9} {'ratio':>6} {'MACs':>16}")
    for name, shape, classes in (("wrn-28-10", (3, 32, 32), 10), ("resnet50", (3, 224, 224), 1000)):
        model = create_model(name, num_classes=classes).eval()
        rows = [(counter, *_time(fn)) for counter, fn in _counters(model, shape)]
        ours = rows[0][1]
        for counter, secs, macs in rows:
            print(f"{name:<10} {counter:<9} {secs:>9.3f} {secs / ours:>6.2f} {macs:>16,}")


if __name__ == "__main__":
    main()
