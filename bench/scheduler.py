"""Scheduler overhead: N stand-in jobs of ~1 s on S slots through `run_sweep` and on Ray.

Each job is a Python process that sleeps and writes a done summary.json, started through the
same launcher as `nettle train` (own process group, pinned environment, store claims, log).
Reports the makespan against the ideal (jobs x seconds / slots), the overhead per job, and, side
by side, a bare pool of S threads running the same processes with `subprocess.run` (no store,
no groups), the same sweep on a local Ray started with S CPUs (one CPU per task, through
`run_sweep_ray`; Ray's start-up is printed apart, not counted in the makespan), and the
interpreter's own start-up time.

The local sweep runs `--repeats` times (min / median / max printed); goal: makespan / ideal
<= 1.05 for the local executor. The load average is printed first: rerun above 1.

    python bench/scheduler.py [--jobs 24] [--slots 2] [--seconds 1.0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nettle.experiment.schedule import run_sweep
from nettle.experiment.spec import plan_sweep

JOB = (
    "import pathlib, sys, time; time.sleep(float(sys.argv[3])); "
    "pathlib.Path(sys.argv[2], 'summary.json').write_text('{\"status\": \"done\"}')"
)


def _startup(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bare_pool(jobs: int, slots: int, seconds: float, root: Path) -> float:
    def one(i: int) -> None:
        run_dir = root / f"bare{i}"
        run_dir.mkdir(parents=True)
        argv = [sys.executable, "-c", JOB, "-", str(run_dir), str(seconds)]
        subprocess.run(argv, check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(one, range(jobs)))
    return time.perf_counter() - t0


def _ray(plan, root: Path, slots: int, command, jobs: int) -> tuple[float | None, float | None]:
    """Makespan of the sweep on a local Ray with `slots` CPUs, and Ray's start-up time."""
    try:
        import ray

        from nettle.experiment.backends.ray import run_sweep_ray
    except ImportError:
        return None, None
    t0 = time.perf_counter()
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        result = run_sweep_ray(plan, root=root, command=command, num_cpus_per_run=1)
        span = time.perf_counter() - t0
    finally:
        ray.shutdown()
    assert result.ok and len(result.done) == jobs, result
    return span, init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    ideal = args.jobs * args.seconds / args.slots
    spec = {"name": "bench", "grid": {"train.seed": list(range(args.jobs))}}
    spec["base"] = {"evaluate": {"count": None}}  # the stand-in job trains nothing to count
    plan = plan_sweep(spec)

    def command(config: Path, run_dir: Path) -> list[str]:
        return [sys.executable, "-c", JOB, str(config), str(run_dir), str(args.seconds)]

    with tempfile.TemporaryDirectory(prefix="nettle-bench-") as tmp:
        root = Path(tmp)
        spans = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            result = run_sweep(plan, root=root / f"local{i}", slots=args.slots, command=command)
            spans.append(time.perf_counter() - t0)
            assert result.ok and len(result.done) == args.jobs, result
        sweep = statistics.median(spans)
        bare = _bare_pool(args.jobs, args.slots, args.seconds, root)
        ray_span, ray_init = _ray(plan, root / "ray", args.slots, command, args.jobs)
    startup = _startup()
    print(f"{args.jobs} jobs of {args.seconds:.2f} s on {args.slots} slots, ideal {ideal:.2f} s")
    print(f"{'launcher':<34}{'makespan s':>12}{'/ ideal':>10}{'overhead/job s':>16}")
    rows = [("nettle run_sweep (store, groups)", sweep), ("bare thread pool", bare)]
    if ray_span is not None:
        rows.append(("nettle run_sweep_ray (Ray tasks)", ray_span))
    for name, span in rows:
        overhead = (span - ideal) * args.slots / args.jobs
        print(f"{name:<34}{span:>12.2f}{span / ideal:>10.3f}{overhead:>16.3f}")
    ratios = sorted(span / ideal for span in spans)
    print(
        f"local makespan / ideal over {len(spans)} runs: min {ratios[0]:.3f}, median "
        f"{statistics.median(ratios):.3f}, max {ratios[-1]:.3f} (goal <= 1.05)"
    )
    if ray_init is not None:
        print(f"ray.init of a local cluster (not in the makespan): {ray_init:.2f} s")
    print(f"python start-up alone (median of 5): {startup:.3f} s per job")


if __name__ == "__main__":
    main()
