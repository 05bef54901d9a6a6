import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from nettle.experiment.report import pareto_front, plot_tradeoff, write_report


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
