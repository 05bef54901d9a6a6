import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from nettle.experiment.report import (
    ReferencePoint,
    load_reference_points,
    pareto_front,
    plot_learning_curves,
    plot_robustness,
    plot_tradeoff,
    substitute_family,
    training_mode,
    write_report,
)
from nettle.experiment.report_plots import LABEL_CAP


def _records():
    return [
        {
            "name": "teacher",
            "conv": "Conv",
            "params": 90_000,
            "macs": 2_000_000,
            "test_acc": 0.98,
            "robustness": {"pgd": {"0.1": 0.40, "0.2": 0.05}},
            "history": [
                {"epoch": 1, "train_loss": 1.0, "test_acc": 0.9},
                {"epoch": 2, "train_loss": 0.5, "test_acc": 0.98},
            ],
        },
        {
            "name": "sep",
            "conv": "Sep",
            "params": 20_000,
            "macs": 500_000,
            "test_acc": 0.96,
            "robustness": {"pgd": {"0.1": 0.30, "0.2": 0.02}},
        },
        {
            "name": "shuffle",
            "conv": "Shuffle_4",
            "params": 21_000,
            "macs": 450_000,
            "test_acc": 0.93,
        },
        {
            "name": "worse",
            "conv": "Generic_0.1",
            "params": 40_000,
            "macs": 900_000,
            "test_acc": 0.95,
        },
    ]


def test_pareto_front_by_hand():
    # (cost, error): b dominates d; a is cheapest; c is best
    pts = [(1.0, 9.0), (2.0, 5.0), (4.0, 1.0), (3.0, 6.0), (2.0, 5.5)]
    assert pareto_front(pts) == [0, 1, 2]
    assert pareto_front([]) == []


def test_tradeoff_plot_labels_do_not_overlap():
    recs = [
        {"name": f"run-{i}", "params": 1000 + 10 * i, "test_acc": 0.9 + 0.001 * i} for i in range(6)
    ]
    fig = plot_tradeoff(recs, "params")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in ax.texts]
    assert len(boxes) == 6
    for i in range(6):
        for j in range(i + 1, 6):
            assert not boxes[i].overlaps(boxes[j]), (ax.texts[i].get_text(), ax.texts[j].get_text())
    assert ax.get_xlabel() == "parameters" and ax.get_ylabel() == "test error (%)"


def test_write_report_html_and_markdown(tmp_path):
    files = write_report(_records(), tmp_path, title="demo", commands=["nettle demo"], notes=["n1"])
    page = files.html.read_text()
    assert page.count("<tr>") == 1 + 4  # header + one row per run
    assert "pgd eps=0.1 (%)" in page and ">40.00<" in page and ">2.00<" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 4
    md = files.markdown.read_text()
    assert "| teacher | Conv | 90,000 | 2,000,000 | 98.00 | 40.00 | 5.00 |" in md
    assert "![error_vs_params](error_vs_params.png)" in md and "nettle demo" in md
    for path in files.plots.values():
        from matplotlib.image import imread

        img = imread(path)
        assert img.shape[0] > 100 and float(np.var(img)) > 0.0  # not blank


@pytest.mark.parametrize("cost", ["params", "macs"])
def test_front_drawn_on_tradeoff(cost):
    fig = plot_tradeoff(_records(), cost)
    ax = fig.axes[0]
    front_line = [line for line in ax.lines if line.get_label() == "Pareto front"]
    assert len(front_line) == 1
    assert _names_on(ax) == {"teacher", "sep", "shuffle", "worse"}  # a small sweep: every name


# --- families, modes, labels at sweep scale -------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "family"),
    [
        ("Generic_0.1", "Generic"),
        ("ACDC_12", "ACDC"),
        ("TensorTrain_0.8", "TensorTrain"),
        ("Shuffle_4", "Shuffle"),
        ("HashedDecimate", "HashedDecimate"),
        ("SepHashedDecimate", "SepHashedDecimate"),
        ("Sep", "Sep"),
        ("Conv", "Conv"),
        (None, "Conv"),
        ("", "Conv"),
    ],
)
def test_substitute_family_strips_the_setting(conv, family):
    assert substitute_family(conv) == family


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        ({}, "plain"),
        ({"distill": None, "adversarial": None, "bayes": None}, "plain"),
        ({"distill": {"teacher": "runs/t"}, "adversarial": None}, "distilled"),
        ({"adversarial": {"mode": "madry"}}, "adversarial"),
        ({"bayes": {"threshold": -3.0}}, "bayes"),
    ],
)
def test_training_mode_from_the_config(config, mode):
    assert training_mode(config) == mode


FAMILIES = ["Conv", "Sep", "Generic_0.1", "ACDC_12"]


def _sweep(n, seed=0, named=()):
    rng = np.random.default_rng(seed)
    params = rng.uniform(1e3, 1e5, n)
    acc = rng.uniform(0.80, 0.99, n)
    modes = [{}, {"distill": {"teacher": "t"}}, {"adversarial": {"eps": 0.03}}]
    return [
        {
            "name": f"run-{i}",
            "conv": FAMILIES[i % 4],
            "config": modes[i % 3],
            "params": float(params[i]),
            "macs": float(params[i] * 30),
            "test_acc": float(acc[i]),
            "label": i in named,
        }
        for i in range(n)
    ]


def _names_on(ax):
    return {t.get_text() for t in ax.texts if type(t) is Text}


def _front_by_hand(recs, cost):
    pts = [(r[cost], 1 - r["test_acc"]) for r in recs]
    return {
        recs[i]["name"]
        for i, (x, y) in enumerate(pts)
        if not any(x2 <= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in pts)
    }


def test_tradeoff_names_only_the_front_and_named_runs_but_draws_every_run():
    recs = _sweep(200, named=(3, 77))
    fig = plot_tradeoff(recs, "params")
    ax = fig.axes[0]
    front = _front_by_hand(recs, "params")
    assert 2 <= len(front) < 20
    assert _names_on(ax) == front | {"run-3", "run-77"}
    runs = [c for c in ax.collections if c.get_gid() == "runs"]
    assert sum(len(c.get_offsets()) for c in runs) == 200
    assert len(runs) == 12  # 4 families x 3 modes
    colours = {}
    for c in runs:
        family = c.get_label().split(",")[0]
        colours.setdefault(family, set()).add(tuple(c.get_facecolor()[0][:3]))
    assert all(len(v) == 1 for v in colours.values())  # one colour per family
    assert len({next(iter(v)) for v in colours.values()}) == 4  # and they differ
    legends = [[t.get_text() for t in lg.get_texts()] for lg in fig.legends]
    assert legends[0] == ["ACDC", "Conv", "Generic", "Sep"]
    assert legends[1] == ["plain", "distilled", "adversarial", "Pareto front"]


def test_tradeoff_caps_the_names_of_a_long_front():
    n = 60  # every run on the front: cheaper is always worse
    recs = [
        {"name": f"r{i}", "conv": "Sep", "params": 1000 + i, "test_acc": 0.5 + i / 200}
        for i in range(n)
    ]
    ax = plot_tradeoff(recs, "params").axes[0]
    names = _names_on(ax)
    assert len(names) == LABEL_CAP
    assert {"r0", f"r{n - 1}"} <= names  # both ends of the front


def test_reference_points_are_drawn_and_named():
    refs = [
        ReferencePoint("WRN-28-10 (paper)", params=5e4, error=4.0, macs=1.5e6),
        ReferencePoint("no MACs given", params=2e4, error=9.0),
    ]
    recs = _sweep(40)
    by_params = plot_tradeoff(recs, "params", refs).axes[0]
    assert {"WRN-28-10 (paper)", "no MACs given"} <= _names_on(by_params)
    stars = [c for c in by_params.collections if c.get_gid() == "references"]
    assert len(stars) == 1 and stars[0].get_offsets().tolist() == [[5e4, 4.0], [2e4, 9.0]]
    by_macs = plot_tradeoff(recs, "macs", refs).axes[0]
    assert "WRN-28-10 (paper)" in _names_on(by_macs)
    assert "no MACs given" not in _names_on(by_macs)


def _robust_sweep(n):
    recs = _sweep(n)
    for i, r in enumerate(recs):
        r["robustness"] = {
            "fgsm": {0.1: 0.5 + i / 1000, 0.2: 0.3},
            "pgd(steps=10)": {0.1: 0.4, 0.2: 0.1 + i / 1000},
        }
        r["history"] = [
            {"epoch": e, "train_loss": 1 / e, "test_acc": r["test_acc"]} for e in (1, 2)
        ]
    return recs


def test_robustness_and_learning_curves_summarise_many_runs_per_family():
    few = plot_robustness(_robust_sweep(3))
    assert len(few.axes) == 1 and len(few.axes[0].lines) == 3 * 2  # a line per run and attack
    many = plot_robustness(_robust_sweep(60))
    assert len(many.axes) == 3 * 2  # modes x attacks
    assert [len(ax.lines) for ax in many.axes] == [4] * 6  # a median per family
    assert [t.get_text() for t in many.legends[0].get_texts()] == ["ACDC", "Conv", "Generic", "Sep"]
    curves = plot_learning_curves(_robust_sweep(60))
    assert len(curves.axes) == 3 * 2 and [len(ax.lines) for ax in curves.axes] == [4] * 6
    assert len(plot_learning_curves(_robust_sweep(5)).axes[0].lines) == 5


def test_table_shows_mode_and_top5_when_some_run_has_them_and_lists_references(tmp_path):
    recs = _records()
    recs[0] |= {"test_top5": 0.995, "mode": "distilled"}
    refs = [ReferencePoint("paper net", params=50_000, error=3.0, macs=1e6)]
    md = write_report(recs, tmp_path, references=refs).markdown.read_text()
    assert "| run | substitute | training | params | MACs | test acc (%) | top-5 acc (%) |" in md
    assert "| teacher | Conv | distilled | 90,000 | 2,000,000 | 98.00 | 99.50 |" in md
    assert "| sep | Sep | plain | 20,000 | 500,000 | 96.00 |  |" in md
    assert (
        "Published results (black stars): paper net (50,000 params, 1,000,000 MACs, 3% error)."
        in md
    )


# --- reference files -------------------------------------------------------------------


def test_load_reference_points_from_yaml_and_csv(tmp_path):
    yml = tmp_path / "refs.yaml"
    yml.write_text(
        "- {name: A, params: 1.5e6, macs: 2e8, error: 4.5}\n- {name: B, params: 3e5, error: 7}\n"
    )
    assert load_reference_points(yml) == [
        ReferencePoint("A", 1.5e6, 4.5, 2e8),
        ReferencePoint("B", 3e5, 7.0, None),
    ]
    csv = tmp_path / "refs.csv"
    csv.write_text("name,params,macs,error\nA,1500000,200000000,4.5\nB,300000,,7\n")
    assert load_reference_points(csv) == load_reference_points(yml)


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.csv", "name,params,error\nA,1000,4\nB,2000,lots\n", r"row 2, field 'error'"),
        ("bad.csv", "name,params,error\nA,-5,4\n", r"row 1, field 'params'"),
        ("bad.yaml", "- {name: A, params: 1000, error: 4, acc: 0.9}\n", r"row 1, field 'acc'"),
        ("bad.yaml", "- {name: A, params: 1000, error: 140}\n", r"row 1, field 'error'"),
        ("bad.yaml", "- {params: 1000, error: 4}\n", r"row 1, field 'name'"),
        ("bad.yaml", "name: A\n", r"expected a non-empty list"),
        ("bad.yaml", "- [unclosed\n", r"not valid YAML"),
        ("bad.json", "[]", r"\.yaml, \.yml or \.csv"),
    ],
)
def test_a_bad_reference_file_names_the_file_row_and_field(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=where) as info:
        load_reference_points(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and "\n" not in message
