"""The GPU checks of nettle, in one run of a few minutes on one GPU (`bench/gpu_check.sh`).

1. `PhaseTimer` synchronisation: a kernel that spins for a known time (`torch.cuda._sleep`,
   calibrated with CUDA events) launched in phase "launch", then a phase "next" that launches
   nothing: the synchronising timer must charge the spin to "launch"; a timer without a device
   (no synchronisation) charges it to "next", the phase that waits for it. Per-phase peaks: a
   256 MiB tensor made and freed inside one phase shows in that phase's peak only.
2. `MemoryMeter` on the CUDA allocator: a 512 MiB tensor made and freed inside the block.
3. The Trainer on wrn-16-8 with CIFAR-shaped random data made on the device (no download):
   fp32, bf16, and bf16 + channels_last + torch.compile; images per second over the second
   epoch (the first holds the compilation), and the compile phase's seconds.
4. PGD-Linf (10 steps, eps 8/255) on wrn-16-8: nettle's in bf16 with channels_last against
   torchattacks' PGD in fp32 (where installed), time per batch and their ratio.
5. Substitute blocks against the dense 3x3 conv: forward + backward time at 320 channels,
   16 x 16 (a WRN-28-10 stage), batch 128, fp32.

It prints Markdown tables headed by the card's name (`torch.cuda.get_device_name`), each check
with "ok" or what went wrong, and exits 0 with one line saying so where no CUDA GPU is present
(importing this module never needs CUDA). Exit status 1 when a check fails or a section
raises (the other sections still run and print).

    python bench/gpu_check.py [--quick] [--cpu]

`--cpu` runs the speed sections on the CPU with a tiny WRN and tiny sizes: a dry run that the
code paths work where no GPU is at hand (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.data import TensorDataset

MiB = 2**20
SUBSTITUTES = ["Conv", "Sep", "Generic_0.1", "Shuffle_4", "ACDC", "TensorTrain_0.44", "CP_0.5"]


def time_ms(fn: Callable[[], object], repeats: int = 10, device: str = "cuda") -> list[float]:
    """Milliseconds of each of `repeats` calls of `fn` after one warm-up: by CUDA events on a
    GPU, by `time.perf_counter` on the CPU (the dry run of `--cpu`)."""
    fn()
    times = []
    for _ in range(repeats):
        if device != "cuda":
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _spin_cycles(ms: float) -> int:
    """The `torch.cuda._sleep` cycles that spin for about `ms` milliseconds on this GPU."""
    cycles = 1_000_000
    took = statistics.median(time_ms(lambda: torch.cuda._sleep(cycles), 3))
    return int(cycles * ms / took)


def check_phase_timer() -> list[tuple[str, str, str]]:
    """Rows (check, measured, verdict) of the PhaseTimer checks."""
    from nettle.measure.timing import PhaseTimer

    spin, rows = _spin_cycles(50.0), []
    for label, timer in (("sync", PhaseTimer("cuda")), ("no sync", PhaseTimer(None))):
        for _ in range(3):
            with timer.phase("launch"):
                torch.cuda._sleep(spin)
            with timer.phase("next"):
                torch.cuda.synchronize()  # the phase that waits for the spin
        launch, after = (1e3 * timer.stats()[k].median for k in ("launch", "next"))
        charged = "launch" if launch > after else "next"
        want = "launch" if label == "sync" else "next"
        verdict = "ok" if charged == want else f"FAIL: the spin went to {charged}"
        rows.append(
            (
                f"PhaseTimer {label}: 50 ms spin",
                f"launch {launch:.1f} ms, next {after:.1f} ms",
                verdict,
            )
        )
    timer = PhaseTimer("cuda")
    base = torch.cuda.memory_allocated()
    with timer.phase("big"):
        x = torch.empty(256 * MiB, dtype=torch.uint8, device="cuda")
        del x
    with timer.phase("small"):
        x = torch.empty(MiB, dtype=torch.uint8, device="cuda")
        del x
    big, small = ((timer.peak_memory()[k] - base) / MiB for k in ("big", "small"))
    ok = 256 <= big < 258 and 0 < small < 3
    rows.append(
        (
            "PhaseTimer per-phase peaks",
            f"big +{big:.1f} MiB, small +{small:.1f} MiB",
            "ok" if ok else "FAIL",
        )
    )
    return rows


def check_memory_meter() -> list[tuple[str, str, str]]:
    from nettle.measure.memory import MemoryMeter

    keep = torch.ones(MiB, device="cuda")  # already allocated: not part of the peak
    with MemoryMeter("cuda") as meter:
        x = torch.empty(512 * MiB, dtype=torch.uint8, device="cuda")
        del x
    del keep
    peak = meter.peak_bytes / MiB
    ok = meter.method == "cuda-allocator" and 512 <= peak < 514
    return [("MemoryMeter 512 MiB", f"+{peak:.1f} MiB ({meter.method})", "ok" if ok else "FAIL")]


def _wrn(model: str, device: str, channels_last: bool = False) -> torch.nn.Module:
    from nettle.models import create_model

    torch.manual_seed(0)
    net = create_model(model, num_classes=10).to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _cifar(n: int, device: str) -> TensorDataset:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(n, 3, 32, 32, device=device, generator=g)
    y = torch.randint(0, 10, (n,), device=device, generator=g)
    return TensorDataset(x, y)


def trainer_speed(n: int, batch: int, model: str, device: str) -> list[tuple[str, str, str]]:
    """Rows (setting, images/s of the second epoch, compile seconds) of `model` training."""
    from nettle.config import TrainConfig
    from nettle.train.loop import Trainer

    data, rows = _cifar(n, device), []
    settings = {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        "bf16 + channels_last + compile": {
            "precision": "bf16",
            "channels_last": True,
            "compile": True,
        },
    }
    for label, extra in settings.items():
        cfg = TrainConfig(
            epochs=2,
            device=device,
            tensorboard=False,
            deterministic=False,
            optim={"lr": 0.1},
            **extra,
        )
        trainer = Trainer(_wrn(model, device), data, None, cfg, batch_size=batch)
        trainer.fit()
        rate = n / trainer.history[-1]["time"]
        compile_s = trainer.history[0]["phases"].get("compile")
        failed = trainer._compiled.failed if trainer._compiled is not None else None
        note = f"{compile_s:.1f}" if compile_s is not None else "-"
        rows.append((label, f"{rate:,.0f}", note + (f" (eager: {failed})" if failed else "")))
    return rows


def pgd_speed(batch: int, model: str, device: str) -> list[tuple[str, str, str]]:
    """Rows (attack, ms per batch (min/median/max), ratio to torchattacks fp32)."""
    from nettle.attack import create_attack
    from nettle.train.precision import autocast

    x, y = _cifar(batch, device).tensors
    net = _wrn(model, device, channels_last=True).eval()
    ours = create_attack("pgd", net, eps=8 / 255, steps=10, seed=0)
    xl = x.contiguous(memory_format=torch.channels_last)

    def run_ours() -> None:
        with autocast("bf16", device):
            ours(xl, y)

    rows, times = [], {"nettle PGD, bf16 + channels_last": time_ms(run_ours, 5, device)}
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        ref = torchattacks.PGD(_wrn(model, device).eval(), eps=8 / 255, alpha=2 / 255, steps=10)
        times["torchattacks PGD, fp32"] = time_ms(lambda: ref(x, y), 5, device)
    base = statistics.median(times.get("torchattacks PGD, fp32", [float("nan")]))
    for label, t in times.items():
        spread = f"{min(t):.1f} / {statistics.median(t):.1f} / {max(t):.1f}"
        rows.append((label, spread, f"{statistics.median(t) / base:.2f}"))
    return rows


def substitute_speed(batch: int, device: str) -> list[tuple[str, str, str]]:
    """Rows (substitute, forward + backward ms (median), ratio to the dense conv)."""
    from nettle.nn.substitutes import create_conv

    x = torch.rand(batch, 320, 16, 16, device=device)
    rows, base = [], None
    for spec in SUBSTITUTES:
        torch.manual_seed(0)
        layer = create_conv(spec, 320, 320, 3, padding=1).to(device)

        def step(layer: torch.nn.Module = layer) -> None:
            layer.zero_grad(set_to_none=True)
            layer(x).sum().backward()

        ms = statistics.median(time_ms(step, 10, device))
        base = ms if base is None else base
        rows.append((spec, f"{ms:.2f}", f"{ms / base:.2f}"))
    return rows


def _table(title: str, head: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def sections(model: str, n: int, batch: int, device: str) -> list[tuple[str, tuple, Callable]]:
    """(title, table head, rows) of the speed sections."""
    return [
        (
            f"Trainer, {model}, batch {batch}",
            ("setting", "images/s (2nd epoch)", "compile s"),
            lambda: trainer_speed(n, batch, model, device),
        ),
        (
            f"PGD-Linf 10 steps, {model}, batch {2 * batch}",
            ("attack", "ms min / median / max", "time / torchattacks"),
            lambda: pgd_speed(2 * batch, model, device),
        ),
        (
            f"Substitutes, 320 ch, 16 x 16, batch {batch}, forward + backward",
            ("block", "ms (median of 10)", "time / dense"),
            lambda: substitute_speed(batch, device),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data (a smoke test)")
    parser.add_argument(
        "--cpu", action="store_true", help="dry run of the speed sections on the CPU (tiny sizes)"
    )
    args = parser.parse_args(argv)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    t0, failed = time.perf_counter(), False
    if args.cpu:
        print(f"## CPU dry run (torch {torch.__version__}, load average {load})\n")
        plan = sections("wrn-10-1", 64, 16, "cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible here; nothing to check (exit 0)")
        return 0
    else:
        name = torch.cuda.get_device_name()
        print(f"## {name} (torch {torch.__version__}, CUDA {torch.version.cuda}, load {load})\n")
        checks = check_phase_timer() + check_memory_meter()
        print(_table("Timing and memory", ("check", "measured", "verdict"), checks))
        failed = any(not verdict.startswith("ok") for *_, verdict in checks)
        plan = sections("wrn-16-8", 2048 if args.quick else 10240, 128, "cuda")
    for title, head, run in plan:
        try:
            print(_table(title, head, run()))
        except Exception as exc:  # report and go on: the other sections still say something
            line = next((s for s in str(exc).splitlines() if s.strip()), "")
            print(f"### {title}\n\nFAILED: {type(exc).__name__}: {line}\n")
            failed = True
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
