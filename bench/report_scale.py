"""Report time at sweep scale: `report_from_store` of 100, 500 and 1,000 finished runs.

Builds, in a temporary folder, a run store of synthetic finished runs: 8 substitute families
(Conv, Sep, Generic, Shuffle, Hashed, ACDC, TensorTrain, Tucker) at several settings, trained
plain, distilled or adversarially, with plausible parameters, multiply-adds and test accuracy,
robust accuracies for FGSM and PGD-10 at 3 epsilons, and a 3-epoch `metrics.jsonl` in each run
dir. Then times the whole report (store query, records, plots, HTML and Markdown, sweep file):
the load average first, then min / median / max seconds over the repeats and the ratio of the
median to the 10 s goal for 1,000 runs. Also prints how many names each trade-off plot writes
(at most `LABEL_CAP`).

    python bench/report_scale.py [--runs 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from matplotlib.text import Text

from nettle.config import AdversarialConfig, DistillConfig, ExperimentConfig, config_hash
from nettle.experiment.report_plots import LABEL_CAP, plot_tradeoff
from nettle.experiment.store import Store
from nettle.experiment.store_report import records_from_rows, report_from_store

GOAL_S = 10.0
DENSE_PARAMS, DENSE_MACS = 1_460_000, 220_000_000
# family: (settings, share of the dense parameters at a setting, share of its multiply-adds)
FAMILIES: dict[str, tuple[list[Any], Any, Any]] = {
    "Conv": ([None], lambda s: 1.0, lambda s: 1.0),
    "Sep": ([None], lambda s: 0.13, lambda s: 0.14),
    "Generic": ([0.05, 0.1, 0.2, 0.4], lambda s: s * 1.1, lambda s: s * 1.2),
    "Shuffle": ([2, 4, 8, 16], lambda s: 1.05 / s, lambda s: 1.1 / s),
    "Hashed": ([0.05, 0.1, 0.25, 0.5], lambda s: s, lambda s: 1.0),
    "ACDC": ([4, 8, 12, 16], lambda s: 0.004 * s, lambda s: 0.01 * s),
    "TensorTrain": ([0.2, 0.4, 0.8], lambda s: 0.25 * s, lambda s: 0.3 * s),
    "Tucker": ([0.2, 0.4, 0.8], lambda s: 0.3 * s, lambda s: 0.35 * s),
}
ATTACKS = [("fgsm", {}), ("pgd", {"steps": 10})]
EPS = [2 / 255, 4 / 255, 8 / 255]


def _run(i: int, rng: random.Random, base: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """One synthetic finished run: its config and its final numbers."""
    family = list(FAMILIES)[i % len(FAMILIES)]
    settings, param_share, mac_share = FAMILIES[family]
    setting = settings[(i // len(FAMILIES)) % len(settings)]
    mode = ("plain", "distilled", "adversarial")[(i // 3) % 3]
    cfg = copy.deepcopy(base)
    cfg["model"]["conv"] = None if family == "Conv" else family + (f"_{setting}" * bool(setting))
    cfg["train"]["seed"] = i
    cfg["name"] = f"{family.lower()}{'' if setting is None else f'-{setting}'}-{mode}-{i}"
    if mode == "distilled":
        cfg["distill"] = DistillConfig(teacher="runs/teacher").model_dump(mode="json")
    if mode == "adversarial":
        cfg["adversarial"] = AdversarialConfig().model_dump(mode="json")
    share = min(1.0, param_share(setting))
    acc = 0.955 + 0.012 * math.log10(share) + (0.006 if mode == "distilled" else 0.0)
    acc -= 0.04 if mode == "adversarial" else 0.0
    acc = max(0.5, min(0.99, acc + rng.gauss(0, 0.006)))
    # robust accuracy falls with eps (in 1/255 steps): slowly after adversarial training
    rate = (0.06 if mode == "adversarial" else 0.3) * (1 + 0.15 * (i % len(FAMILIES) % 3))
    robust = [
        {"attack": attack, "options": options, "eps": eps, "examples": 1000,
         "accuracy": max(0.0, min(acc, acc * math.exp(-rate * (1.5 if options else 1.0) * eps
                                                        * 255) + rng.gauss(0, 0.01)))}
        for attack, options in ATTACKS for eps in EPS
    ]  # fmt: skip
    metrics = {
        "params": int(DENSE_PARAMS * share * rng.uniform(0.97, 1.03)),
        "macs": int(DENSE_MACS * min(1.0, mac_share(setting)) * rng.uniform(0.97, 1.03)),
        "best_test_acc": acc,
    }
    return cfg, {"metrics": metrics, "robustness": robust, "final_acc": acc}


def build_store(root: Path, runs: int, seed: int = 0) -> Store:
    """A store of `runs` finished synthetic runs of the sweep `scale` under `root`."""
    rng = random.Random(seed)
    base = ExperimentConfig().model_dump(mode="json")
    store = Store(root / "nettle.db")
    made = [_run(i, rng, base) for i in range(runs)]
    rows = []
    for cfg, _ in made:
        run_id = config_hash(cfg)
        run_dir = root / "scale" / run_id
        run_dir.mkdir(parents=True)
        rows.append({"id": run_id, "sweep": "scale", "name": cfg["name"], "config": cfg,
                     "run_dir": str(run_dir)})  # fmt: skip
    store.add_runs(rows)
    for row, (_, numbers) in zip(rows, made):
        acc = numbers["final_acc"]
        epochs = [
            {"kind": "epoch", "epoch": e, "train_loss": (1.2 + 6 * (1 - acc)) / e + rng.uniform(0, 0.05),
             "test_acc": acc - 0.1 / e + 0.1 / 3}
            for e in (1, 2, 3)
        ]  # fmt: skip
        text = "".join(json.dumps(r) + "\n" for r in epochs)
        (Path(row["run_dir"]) / "metrics.jsonl").write_text(text)
        store.set_status(row["id"], "done")
        store.record_metrics(row["id"], numbers["metrics"])
        if hasattr(store, "record_robustness"):
            store.record_robustness(row["id"], numbers["robustness"])
    return store


def _names_written(store: Store) -> dict[str, int]:
    records, _ = records_from_rows(store.query(sweep="scale"))
    counts = {}
    for cost in ("params", "macs"):
        ax = plot_tradeoff(records, cost).axes[0]
        counts[cost] = sum(type(t) is Text for t in ax.texts)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    if not hasattr(Store, "record_robustness"):
        print("Store has no record_robustness: the runs have no robust accuracies")
    sizes = sorted({100, 500, args.runs})
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            store = build_store(root, n)
            repeats = args.repeats if n == args.runs else 1
            times = []
            for k in range(repeats):
                t0 = time.perf_counter()
                files = report_from_store(store, root / f"report{k}", sweep="scale")
                times.append(time.perf_counter() - t0)
            assert len(files.records) == n
            line = f"{n:5d} runs: report in {statistics.median(times):.2f} s"
            if repeats > 1:
                line += (
                    f" (min {min(times):.2f} / median {statistics.median(times):.2f} / max "
                    f"{max(times):.2f} s over {repeats}; median / {GOAL_S:g} s goal = "
                    f"{statistics.median(times) / GOAL_S:.2f})"
                )
            print(line)
            if n == args.runs:
                sizes_kb = {p.name: p.stat().st_size // 1024 for p in files.plots.values()}
                print(f"       files (KiB): html {files.html.stat().st_size // 1024}, {sizes_kb}")
                print(f"       names written (cap {LABEL_CAP}): {_names_written(store)}")
                keep = Path(os.environ.get("REPORT_SCALE_KEEP", ""))
                if keep.name:
                    keep.mkdir(parents=True, exist_ok=True)
                    for p in [files.html, files.markdown, *files.plots.values()]:
                        (keep / p.name).write_bytes(p.read_bytes())


if __name__ == "__main__":
    main()
