"""AutoAttack side by side: nettle's `run_autoattack` vs the reference code (`pyautoattack`).

Two digits CNNs from `examples/madry-digits.yaml`: the Madry-PGD-trained model (L-infinity eps
0.1) and its naturally trained twin (the same config without `adversarial`), trained once into
`--cache` (default: a folder under the user's cache; a finished run is reused, never retrained).
On the first `--n` test digits, for each L-infinity eps, both run the "standard" ensemble
(APGD-CE, APGD-T, FAB-T, Square) with the same seed; the table gives the robust accuracy after
each stage and the seconds each stage took (the reference's from its own log lines), and the
ratio ours / reference of the whole run's wall time. The reference runs at its default batch
size (250); ours attacks every still-robust example at once.

Goals: final robust accuracy within 0.5 points of the reference's (or lower); time <= 0.6x.
Timing: one torch thread by default (`--threads`), the two implementations alternating for
`--repeats` rounds; accuracies are from the first round (the seed fixes them). The whole run is
timed by the wall clock and by this thread's CPU time (on a machine shared with other jobs the
wall clock mostly measures the neighbours; with one torch thread all the work is this thread's);
the per-stage seconds are each implementation's own wall-clock figures.
Run: python bench/autoattack.py [--eps 0.1,0.2] [--n 360] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import time
from pathlib import Path

import torch
from pyautoattack import AutoAttack

from nettle.attack import run_autoattack
from nettle.config import load_config
from nettle.experiment.evaluation import checkpoint_of
from nettle.experiment.run import run_experiment
from nettle.models.build import load_run_model
from nettle.train.data import create_dataset

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "madry-digits.yaml"
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
LINE = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")


class _StageLog(logging.Handler):
    """Collects the reference's 'robust accuracy after X: Y% (total time T s)' lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: dict[str, tuple[float, float]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        m = LINE.search(record.getMessage())
        if m:
            self.stages[m.group(1).lower()] = (float(m.group(2)) / 100, float(m.group(3)))


def _models(cache: Path) -> dict[str, torch.nn.Module]:
    madry = load_config(CONFIG)
    natural = madry.model_copy(update={"adversarial": None, "name": "natural-digits"})
    out = {}
    for label, cfg in (("natural", natural), ("madry", madry)):
        run_dir = cache / cfg.name
        run_experiment(cfg, run_dir)  # a finished run is read back, not retrained
        out[label] = load_run_model(run_dir, cfg, checkpoint=checkpoint_of(run_dir)).eval()
    return out


def _ours(model, x, y, eps, seed):
    start, cpu = time.perf_counter(), time.thread_time()
    r = run_autoattack(model, x, y, eps, norm="Linf", version="standard", seed=seed)
    return (time.perf_counter() - start, time.thread_time() - cpu), r.accuracy, r.seconds


def _reference(model, x, y, eps, seed):
    log, logger = _StageLog(), logging.getLogger("auto-attack")
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        start, cpu = time.perf_counter(), time.thread_time()
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed)
        adversary.run_standard_evaluation(x, y, batch_size=250)
        wall = (time.perf_counter() - start, time.thread_time() - cpu)
    finally:
        logger.removeHandler(log)
    acc, seconds, before = {}, {}, 0.0
    for stage in STAGES:
        if stage in log.stages:
            acc[stage], total = log.stages[stage]
            seconds[stage], before = total - before, total
    return wall, acc, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nettle-bench")
    p.add_argument("--eps", default="0.1,0.2")
    p.add_argument("--n", type=int, default=360)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    models = _models(args.cache)
    x, y = create_dataset("digits", "test").tensors
    x, y = x[: args.n], y[: args.n]
    print(f"{len(x)} test digits {tuple(x.shape[1:])}, seed {args.seed}, Linf")
    head = f"{'model':8} {'eps':>4} {'stage':8} {'ours acc':>8} {'ref acc':>8} {'ours s':>7} {'ref s':>7}"
    print(head)
    for label, model in models.items():
        for eps in (float(e) for e in args.eps.split(",")):
            walls = {"ours": [], "ref": []}
            first = {}
            for r in range(args.repeats):
                order = (("ours", _ours), ("ref", _reference))
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    wall, acc, sec = fn(model, x, y, eps, args.seed)
                    walls[name].append(wall)
                    first.setdefault(name, (acc, sec))
            (oa, osec), (ra, rsec) = first["ours"], first["ref"]
            for stage in STAGES:
                cells = [f"{d[stage]:8.2%}" if stage in d else f"{'-':>8}" for d in (oa, ra)] + [
                    f"{d[stage]:7.2f}" if stage in d else f"{'-':>7}" for d in (osec, rsec)
                ]
                print(f"{label:8} {eps:4.2f} {stage:8} " + " ".join(cells))
            final_o, final_r = list(oa.values())[-1], list(ra.values())[-1]
            print(
                f"{label:8} {eps:4.2f} final    {final_o:8.2%} {final_r:8.2%}  "
                f"gap {100 * (final_o - final_r):+.2f} points (goal <= +0.5)"
            )
            for k, clock in enumerate(("wall s", "cpu s")):
                o, r = [w[k] for w in walls["ours"]], [w[k] for w in walls["ref"]]
                mo, mr = statistics.median(o), statistics.median(r)
                print(
                    f"{label:8} {eps:4.2f} {clock:8} ours {mo:.2f} (min {min(o):.2f} max "
                    f"{max(o):.2f})  ref {mr:.2f} (min {min(r):.2f} max {max(r):.2f})  "
                    f"ratio ours/ref {mo / mr:.2f} (goal <= 0.6)"
                )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
