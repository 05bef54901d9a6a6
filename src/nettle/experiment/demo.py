"""The main job: teacher, budgeted students, cost, robustness, report, on the offline digits data.

`run_demo` is what `nettle demo` calls. Everything runs through the sweep scheduler and the
run store (`<root>/nettle.db`), as a user's sweeps would:

1. the teacher (`simple-cnn` on `digits`) as a one-run sweep `demo-teacher`, whose
   `evaluate:` also inspects it (first-layer filters, top patches of two channels, a feature
   visualisation, the training history);
2. two students (low rank, hashed) with `model.budget: {params: N}`, a quarter of the
   teacher's parameters (counted on its config, as `nettle sweep plan` does), solved when the sweep is planned (while the
   teacher trains), distilled from the teacher's run dir (attention transfer, beta 50: see
   `DEMO_BETA`): the sweep `demo-students`, run on two CPU slots. The students need only the
   teacher's checkpoint, so they start as soon as the teacher's training has ended (its
   `summary.json` says so), while the teacher's job goes on with its attacks and inspection:
   one job per model. The teacher trains alone on every core; its evaluation takes one
   thread (`evaluate.threads`), as each student's job does, so no core idles and none is
   oversubscribed;
3. every run's `evaluate:` section counts it (parameters, theoretical and executed
   multiply-adds) and attacks it on the test set (FGSM, PGD, CW at a few epsilons, with the
   masking checks): the ordinary sweep job (`nettle.experiment.job`) runs these stages after
   training and the scheduler records them in the store. Both sweep files are written to
   `<root>/sweeps/<name>.yaml`, so `nettle sweep run` reproduces them;
4. the report is built from the store (`report_from_store`): `report.html` and `report.md`
   (table with robust accuracies, error-vs-cost plots with the Pareto front, accuracy-vs-epsilon
   and learning curves, masking warnings, the inspection, where the time went).

A second invocation skips the finished runs (the scheduler's rule) and rebuilds the report.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoError", "DemoResult", "demo_spec", "run_demo"]

log = logging.getLogger(__name__)

STUDENT_SUBSTITUTES = ("Generic", "Hashed")
BUDGET_FRACTION = 1 / 4
DEMO_EPOCHS = 10
DEMO_EPS = (0.05, 0.1, 0.2)
DEMO_ATTACKS = {
    "fgsm": {},
    "pgd": {"steps": 10},
    "cw": {"binary_search_steps": 4, "steps": 50, "initial_const": 0.1},
}
# Attention transfer averages squared map differences over positions, so its scale grows as
# maps shrink: beta = 1e3 is tuned for 32x32 CIFAR maps; the 8x8 and 4x4 digits maps need less.
DEMO_BETA = 50.0
# Feature visualisation steps: the 8x8 digits' visualisations settle well before the
# inspector's default 512 (see the objective curve in the report).
DEMO_FEATUREVIS_STEPS = 128
TEACHER_SWEEP, STUDENT_SWEEP = "demo-teacher", "demo-students"


class DemoError(RuntimeError):
    """A demo run failed; the message names it and gives the reason from the store."""


@dataclass
class DemoResult:
    """What the demo produced: the report files, the records, seconds per stage."""

    root: Path
    report: Path
    html: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _evaluate(attacks: dict[str, Any], eps: tuple[float, ...], limit: int | None) -> dict:
    return {"attacks": attacks, "eps": list(eps), "limit": limit}


def _tree(name: str, epochs: int | None, seed: int) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"name": "simple-cnn"},
        "data": {"name": "digits", "batch_size": 64},
        "train": {
            "epochs": DEMO_EPOCHS if epochs is None else epochs,
            "seed": seed,
            "device": "cpu",
            "tensorboard": False,  # the report draws the curves from metrics.jsonl
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "cosine"},
        },
    }


def demo_spec(
    epochs: int | None = None,
    seed: int = 0,
    teacher: Path | None = None,
    budget: float | None = None,
    evaluate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo's sweeps: the teacher alone (inspected too), or (with `teacher` and the
    students' parameter `budget`) the students distilled from the teacher's run dir."""
    evaluate = evaluate or _evaluate(DEMO_ATTACKS, DEMO_EPS, None)
    if teacher is None:
        base = _tree("teacher", epochs, seed)
        inspect = {"featurevis": True, "steps": DEMO_FEATUREVIS_STEPS}
        # it trains alone on every core, then is evaluated beside two students
        base["evaluate"] = evaluate | {"inspect": inspect, "threads": 1}
        return {"name": TEACHER_SWEEP, "base": base}
    base = _tree("student", epochs, seed) | {"evaluate": evaluate}
    base["distill"] = {"teacher": str(teacher), "beta": DEMO_BETA}
    base["model"] = base["model"] | {"budget": {"params": budget}}
    variants = [{"name": f"student-{s.lower()}", "model.conv": s} for s in STUDENT_SUBSTITUTES]
    return {"name": STUDENT_SWEEP, "base": base, "list": variants}


def _plan(spec: dict[str, Any], root: Path) -> Any:
    """Write one of the demo's sweep files and plan it."""
    import yaml

    from nettle.experiment.spec import plan_sweep
    from nettle.files import atomic_write

    path = root / "sweeps" / f"{spec['name']}.yaml"
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, yaml.safe_dump(spec, sort_keys=False))
    return plan_sweep(path)


def _sweep(
    plan: Any, store: Any, root: Path, slots: int, notify: Any, stop: Any = None
) -> list[dict[str, Any]]:
    """Run one of the demo's sweeps (until `stop` is set, if given); its store rows, or
    DemoError naming a failed or stopped run."""
    from nettle.experiment.schedule import run_sweep

    names = {r.id: r.config.name for r in plan.runs}

    def progress(event: str, info: dict[str, Any]) -> None:
        if event in ("start", "done", "failed", "skip"):
            notify(event, info | {"name": names.get(info.get("id"), info.get("name"))})

    result = run_sweep(plan, store, root=root, slots=slots, progress=progress, stop=stop)
    if not result.ok:
        failed = {names.get(i, i): why for i, why in result.failed.items()}
        stopped = [names.get(i, i) for i in result.preempted + result.busy]
        raise DemoError(
            f"sweep {plan.name}: failed {failed or 'none'}, stopped or busy {stopped or 'none'};"
            f" logs in {root / plan.name}/<run id>/log.txt"
        )
    return [store.get(r.id) for r in plan.runs]


def _wait_trained(run_dir: Path, sweep: Future) -> None:
    """Return once the run in `run_dir` has finished training (its `summary.json`, replaced
    atomically, says "done"), or its sweep has ended (re-raising the sweep's DemoError)."""
    from nettle.experiment.worker import read_summary

    while not sweep.done():
        if (read_summary(run_dir) or {}).get("status") == "done":
            return
        time.sleep(0.05)
    sweep.result()


def _inspection(teacher_dir: Path, cfg: Any) -> Any:
    """The teacher's inspection stage as a report section: filters, top patches of two
    channels, one feature visualisation, the training history."""
    from nettle.experiment.evaluation import collect_stages
    from nettle.experiment.report import Section

    stage = collect_stages(teacher_dir, cfg).inspect["result"]
    folder, channels = teacher_dir / stage["folder"], stage["channels"]
    keys = ["filters"] + [f"top_patches_c{c}" for c in channels[:2]]
    keys += [f"featurevis_c{c}" for c in channels[:1]] + ["history"]
    labels = {
        "filters": "first-layer filters",
        "history": "training history",
        **{f"top_patches_c{c}": f"top patches, channel {c}" for c in channels},
        **{f"featurevis_c{c}": f"feature visualisation, channel {c}" for c in channels},
    }
    return Section(
        "Inside the teacher",
        text=[
            f"Channels {', '.join(map(str, channels[:2]))} of layer {stage['layer']} "
            "(the most active on the test digits): the test patches that excite them most, and "
            "an input optimised to excite the first one. Full inspection: "
            f"{folder / 'index.html'}."
        ],
        images={labels[k]: folder / f"{k}.png" for k in keys if (folder / f"{k}.png").is_file()},
        caption=f"nettle inspect {teacher_dir} --featurevis",
    )


def _timing(records: list[dict[str, Any]], seconds: dict[str, float]) -> Any:
    from nettle.experiment.report import Section

    phases = sorted({p for r in records for p in r["phases"]})
    rows = []
    for r in records:
        whole = sum(r["phases"].values()) or 1.0
        cells = [
            f"{r['phases'][p]:.2f} ({r['phases'][p] / whole:.0%})" if p in r["phases"] else ""
            for p in phases
        ]
        rows.append([r["name"], *cells])
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    return Section(
        "Where the time went",
        text=[
            f"Wall time of this invocation by stage: {stages}.",
            "Training step time by phase (seconds, share of the step):",
        ],
        table=(["run", *phases], rows),
    )


def run_demo(
    root: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    attack_examples: int | None = None,
    attacks: dict[str, dict[str, Any]] | None = None,
    eps: tuple[float, ...] = DEMO_EPS,
    slots: int = 2,
    inspect: bool = True,
    featurevis_steps: int = DEMO_FEATUREVIS_STEPS,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the main job into `root` and return where its report is.

    Args:
        root: folder of the demo's store, runs (`<root>/<sweep>/<run id>`) and report.
        epochs: training epochs of every model (default `DEMO_EPOCHS`).
        seed: seed of every run.
        attack_examples: attack only the first N test examples (default: all 360).
        attacks: attack name -> options (default `DEMO_ATTACKS`); `eps` their epsilons.
        slots: CPU slots of the students' sweep.
        inspect: add the inspection of the teacher to the report.
        featurevis_steps: optimisation steps of its feature visualisations.
        progress: optional callback `(stage, info)`: stages teacher, students, inspect,
            report, and the scheduler's start, done, skip, failed events of every run.

    Raises:
        DemoError: a run failed (its reason and where its log is).
    """
    from nettle.experiment.record import run_dir_of
    from nettle.experiment.report import REPORT_FILES
    from nettle.experiment.resolve import plan_cost
    from nettle.experiment.store import Store
    from nettle.experiment.store_report import records_from_rows, report_from_store
    from nettle.files import OutputFolder, claim_outputs

    root = Path(root)
    outputs = [
        *REPORT_FILES,
        "demo.json",
        *(f"sweep-{s}.yaml" for s in (TEACHER_SWEEP, STUDENT_SWEEP)),
    ]
    OutputFolder(root).check(outputs)  # a user's file there is refused before anything runs
    root.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda stage, info: None)
    store, seconds = Store(root / "nettle.db"), {}
    evaluate = _evaluate(attacks or DEMO_ATTACKS, eps, attack_examples) | {"seed": seed}

    t0 = time.perf_counter()
    notify("teacher", {"sweep": TEACHER_SWEEP})
    spec = demo_spec(epochs, seed, evaluate=evaluate)
    if inspect:
        spec["base"]["evaluate"]["inspect"]["steps"] = featurevis_steps
    else:
        del spec["base"]["evaluate"]["inspect"]
    plan = _plan(spec, root)
    known = store.get(plan.runs[0].id) or {}
    teacher_dir = Path(known.get("run_dir") or run_dir_of(root, TEACHER_SWEEP, plan.runs[0].id))
    stop = threading.Event()  # the teacher's sweep runs beside; it stops with this thread
    # one slot: the teacher trains on every core (its evaluation then takes one thread)
    with ThreadPoolExecutor(1) as pool:
        teacher_sweep = pool.submit(_sweep, plan, Store(root / "nettle.db"), root, 1, notify, stop)
        try:
            budget = plan_cost(plan.runs[0].config)["params"] * BUDGET_FRACTION
            students_plan = _plan(demo_spec(epochs, seed, teacher_dir, budget, evaluate), root)
            _wait_trained(teacher_dir, teacher_sweep)
            seconds["teacher training"] = t1 = time.perf_counter() - t0
            notify("students", {"sweep": STUDENT_SWEEP, "budget": budget})
            students = _sweep(students_plan, store, root, slots, notify)
        except BaseException:
            stop.set()
            raise
        (teacher,) = teacher_sweep.result()
    seconds["students and teacher evaluation"] = time.perf_counter() - t0 - t1
    notes = [
        f"{r['config']['name']}: {r['config']['model']['conv']} meets the budget of "
        f"{budget:,.0f} parameters with {r['config']['model']['budget']['achieved']:,} "
        f"({r['config']['model']['budget']['achieved'] / budget - 1:+.1%}); distilled from "
        f"the teacher with attention transfer (beta {DEMO_BETA:g})."
        for r in students
    ]
    notes.append(
        "Robust accuracy on the test digits, L-infinity epsilons in [0, 1] pixel units; "
        "FGSM and PGD-10 are bounded by epsilon; CW-L2 is unbounded and counts at every epsilon "
        "at least the L-infinity size of its perturbation."
    )
    sections = [_inspection(Path(teacher["run_dir"]), plan.runs[0].config)] if inspect else []
    notify("report", {"root": str(root)})
    t2 = time.perf_counter()
    records, _ = records_from_rows(store.query())
    sections.append(_timing(records, seconds))
    files = report_from_store(
        store,
        root,
        title="nettle demo: cheap students of a digits teacher",
        commands=[
            f"nettle demo -o {root}",
            f"nettle sweep run {root / 'sweeps' / (STUDENT_SWEEP + '.yaml')} --root {root}",
            f"nettle report --store {root / 'nettle.db'} -o {root}",
            "nettle count simple-cnn --input 1x8x8",
        ],
        notes=notes,
        sections=sections,
    )
    claim_outputs(root, ["demo.json"]).write(
        "demo.json", json.dumps(files.records, indent=2, default=str)
    )
    seconds["report"], seconds["total"] = time.perf_counter() - t2, time.perf_counter() - t0
    return DemoResult(root, files.markdown, files.html, files.records, seconds)
