"""Write the tutorial notebooks of this folder from the cells below (no outputs stored).

Run `python docs/tutorials/make_notebooks.py` after editing a cell; the test suite checks that
the notebooks equal what this script writes and executes each of them (`tests/test_tutorials.py`).
Every notebook works in a fresh temporary folder and trains only tiny runs on the offline
digits data, so each takes well under two minutes on two CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


class Md(str):
    """The text of a Markdown cell (any other cell is code)."""


SETUP = """\
%matplotlib inline
import tempfile
from pathlib import Path

import torch

torch.manual_seed(0)
work = Path(tempfile.mkdtemp(prefix="nettle-tutorial-"))  # everything is written here"""

TRAIN = """\
from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment

tree = {
    "name": "digits",
    "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
    "data": {"name": "digits", "subset": 600},  # a stratified 600 of the 1,437 digits
    "train": {
        "epochs": 3,
        "device": "cpu",
        "tensorboard": False,
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    },
}"""

MEASURE = [
    Md(
        "# Measure: time and cost\n\nnettle counts parameters and multiply-adds (MACs) of any "
        "model by module hooks, per module and in total, under a named counting convention; and "
        "it times code with a stopwatch whose laps count running time only."
    ),
    SETUP,
    Md(
        "## Count a model\n\n`count(model, input_shape)` returns a `CostReport`: plain data, "
        "with the table drawn by `format_cost`."
    ),
    """\
from nettle.measure import count, format_cost
from nettle.models import create_model

model = create_model("simple-cnn", num_classes=10, in_channels=1)
report = count(model, (1, 8, 8))
print(report.params, report.macs)
print(format_cost(report, depth=1))""",
    Md(
        "Conventions differ between papers and tools (which layers count, MACs or FLOPs). The "
        "convention is named and switchable:"
    ),
    """\
from nettle.measure import list_conventions

{name: count(model, (1, 8, 8), convention=name).macs for name in list_conventions()}""",
    Md(
        "A hand check: the first conv layer maps 1 to 32 channels with 3x3 kernels over an 8x8 "
        "map (padding 1), so it costs 8 * 8 * 32 * 9 multiply-adds."
    ),
    """\
first = next(m for m in report.modules if m.name.endswith("stem.0"))
first.macs, 8 * 8 * 32 * 9""",
    Md(
        "## Time code\n\n`Stopwatch`: a lap is the running time since the previous lap; time "
        "while stopped does not count. `PhaseTimer` times named phases of repeated steps."
    ),
    """\
import time

from nettle.measure import PhaseTimer, Stopwatch, format_phases

sw = Stopwatch()
sw.start()
time.sleep(0.05)
sw.lap()
sw.stop()
time.sleep(0.05)  # stopped: not counted
sw.start()
time.sleep(0.02)
sw.lap()
[round(t, 2) for t in sw.lap_times()]""",
    """\
timer = PhaseTimer()
x = torch.rand(64, 1, 8, 8)
for _ in range(5):
    with timer.phase("forward"):
        loss = model(x).logsumexp(1).mean()
    with timer.phase("backward"):
        loss.backward()
print(format_phases(timer))""",
]

COMPRESS = [
    Md(
        "# Compress: structured substitutes and budgets\n\nA substitute replaces every "
        "convolution of a network with a cheaper block of the same signature (separable, "
        "low-rank, ShuffleNet, HashedNet, ACDC, tensor decompositions), chosen by name and a "
        "setting."
    ),
    SETUP,
    Md("## Parameters of each substitute"),
    """\
from nettle.measure import count
from nettle.models import create_model


def params(conv: str) -> int:
    model = create_model("simple-cnn", num_classes=10, in_channels=1, conv=conv)
    return count(model, (1, 8, 8)).params


{conv: params(conv) for conv in ["Conv", "Sep", "Generic_0.25", "Shuffle_4", "ACDC_4"]}""",
    Md(
        "## Meet a budget\n\n`solve_budget` finds the setting of a substitute whose whole "
        "network meets a parameter (or MAC) budget, by scalar root-finding."
    ),
    """\
from nettle.compress.budget import solve_budget


def build(conv: str) -> torch.nn.Module:
    return create_model("simple-cnn", num_classes=10, in_channels=1, conv=conv)


result = solve_budget(build, "Generic", budget=20_000)
result""",
    Md(
        "## Train the compressed student\n\nThe same budget in a run's config: the setting is "
        "solved when the run starts, and the compressed layers' weight decay is scaled by the "
        "compression ratio."
    ),
    TRAIN,
    """\
from nettle.experiment.resolve import resolve_config

student = {
    **tree,
    "name": "student",
    "model": {
        "name": "simple-cnn",
        "kwargs": {"width": 16},
        "conv": "Generic",
        "budget": {"params": 8000},
    },
}
cfg = resolve_config(load_config_dict(student))  # the budget's setting, solved
summary = run_experiment(cfg, work / "student")
cfg.model.conv, summary["final"]["test_acc"]""",
]

ATTACK = [
    Md(
        "# Attack: robust accuracy and its sanity checks\n\nAttacks run on whole minibatches, "
        "keep the model in eval mode and return the adversarial inputs with a success mask. "
        "`evaluate_robustness` measures robust accuracy per attack and epsilon and flags signs "
        "of gradient masking."
    ),
    SETUP,
    TRAIN,
    """\
from nettle.models.build import load_run_model
from nettle.train.data import create_dataset

run_experiment(load_config_dict(tree), work / "digits")
model = load_run_model(work / "digits")
x, y = create_dataset("digits", "test").tensors
x, y = x[:100], y[:100]""",
    Md("## One attack\n\nPGD under an L-infinity bound of 0.1 (pixels in [0, 1])."),
    """\
from nettle.attack import create_attack

pgd = create_attack("pgd", model, eps=0.1, alpha=0.02, steps=10)
result = pgd(x, y)
float(result.success.float().mean()), float(result.linf.max())""",
    Md("## Robust accuracy per attack and epsilon"),
    """\
from nettle.attack import evaluate_robustness

robust = evaluate_robustness(model, (x, y), {"fgsm": {}, "pgd": {"steps": 10}}, [0.05, 0.1, 0.2])
robust""",
    """\
from nettle.inspect.plots import plot_accuracy_vs_eps

plot_accuracy_vs_eps(robust.accuracy, clean=robust.clean_accuracy, norm="Linf")""",
    Md(
        "The warnings list what looks too good (an attack with more steps doing worse, "
        "accuracy that does not fall with epsilon):"
    ),
    "robust.warnings",
]

INSPECT = [
    Md(
        "# Inspect: attributions, feature maps over training, class models\n\nA run can record "
        "the feature maps of fixed test inputs while it trains (`feature_history`); "
        "`inspect_run` draws them beside attributions, filters, weights and top patches."
    ),
    SETUP,
    TRAIN,
    """\
from nettle.inspect.feature_history import load_feature_history

tree["feature_history"] = {"layers": ["net.stem.2", "net.stage2.2"], "epochs": [0, 1, 3]}
run_experiment(load_config_dict(tree), work / "digits")
history = load_feature_history(work / "digits")
history.epochs, {k: tuple(v.shape) for k, v in history.maps.items()}""",
    """\
from nettle.inspect.feature_history import plot_feature_history

plot_feature_history(history, "net.stem.2")""",
    Md(
        "## Attributions\n\nIntegrated gradients are complete: the attributions of an input "
        "sum to its logit minus the baseline's (`delta` is the gap)."
    ),
    """\
from nettle.inspect.attributions import grad_cam, integrated_gradients, plot_attributions, saliency
from nettle.models.build import load_run_model
from nettle.train.data import create_dataset

model = load_run_model(work / "digits")
x = create_dataset("digits", "test").tensors[0][:8]
ig = integrated_gradients(model, x, steps=100)
ig.delta.abs().max()""",
    'plot_attributions([grad_cam(model, x, "net.stage2.0"), saliency(model, x), ig])',
    Md(
        "## A class model\n\nSimonyan et al. (2014): optimise an input for one class logit, "
        "with an L2 penalty on the image."
    ),
    """\
from nettle.inspect import class_model, render
from nettle.inspect.plots import plot_render

vis = render(
    model,
    class_model(3),
    (1, 8, 8),
    steps=100,
    lr=0.1,
    param="pixel",
    transforms=[],
    decorrelate=False,
)
plot_render(vis, title="class 3")""",
    Md("## The model over a plane of inputs"),
    """\
from nettle.inspect.interpolation import interpolate_grid, plot_interpolation_grid

grid = interpolate_grid(model, x[0], x[1], x[2], steps=11, layer="net.stage1.0")
plot_interpolation_grid(grid, channel=0)""",
    Md(
        "## An interactive feature-map viewer\n\nChoose the layer, channel and input; the "
        "redraw is `FeatureMapViewer.draw`."
    ),
    """\
from nettle.inspect.widgets import FeatureMapViewer

viewer = FeatureMapViewer(model, x, ["net.stem.2", "net.stage1.2", "net.stage2.2"])
viewer.widget()""",
    Md("## The whole inspection page"),
    """\
from nettle.inspect.report import inspect_run

files = inspect_run(work / "digits", work / "inspection", top=6)
sorted(files.images)""",
]

SWEEPS = [
    Md(
        "# Sweeps: many runs, one store, one report\n\nA sweep is a base config and a grid of "
        "variations; each run gets a stable id from its config, an existing run is skipped, "
        "never overwritten; results go to an SQLite store that reports read."
    ),
    SETUP,
    """\
from nettle.experiment import plan_sweep

spec = {
    "name": "substitutes",
    "base": {
        "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
        "data": {"name": "digits", "subset": 600},
        "train": {
            "epochs": 3,
            "device": "cpu",
            "tensorboard": False,
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        },
        "evaluate": {"attacks": {"fgsm": {}}, "eps": [0.1], "limit": 100},
    },
    "grid": {"model.conv": ["Conv", "Generic_0.5"]},
}
plan = plan_sweep(spec)
[(run.name, run.id) for run in plan.runs]""",
    Md(
        "## Run it\n\nJobs run in their own processes on CPU slots (or one per free GPU); the "
        "store indexes them."
    ),
    """\
from nettle.experiment import run_sweep

result = run_sweep(plan, work / "runs" / "nettle.db", root=work / "runs", slots=2)
result.done, result.failed""",
    Md("Running it again trains nothing: both runs are done."),
    'run_sweep(plan, work / "runs" / "nettle.db", root=work / "runs", slots=2).skipped',
    Md("## Results as a DataFrame and as a report"),
    """\
from nettle.experiment import Store

store = Store(work / "runs" / "nettle.db")
store.to_dataframe(sweep="substitutes")[["name", "model.conv", "test_acc"]]""",
    """\
from nettle.experiment.store_report import report_from_store

report = report_from_store(store, work / "report", sweep="substitutes")
report""",
]

NOTEBOOKS = {
    "measure": MEASURE,
    "compress": COMPRESS,
    "attack": ATTACK,
    "inspect": INSPECT,
    "sweeps": SWEEPS,
}


def build(cells: list[str]) -> nbformat.NotebookNode:
    """A v4 notebook of `cells`: `Md` ones Markdown, the others code."""
    made = [new_markdown_cell(c) if isinstance(c, Md) else new_code_cell(c) for c in cells]
    for i, cell in enumerate(made):
        cell["id"] = f"cell-{i}"  # stable ids, so that rewriting changes nothing
    nb = new_notebook(cells=made)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def render(name: str) -> str:
    """The text of notebook `name`."""
    return nbformat.writes(build(NOTEBOOKS[name])) + "\n"


def main() -> int:
    for name in NOTEBOOKS:
        (HERE / f"{name}.ipynb").write_text(render(name), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
