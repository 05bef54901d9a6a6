"""Results in a notebook: short reprs, small HTML tables, CostReport.to_dataframe."""

import base64
import io
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from nettle.attack.evaluate import RobustnessResult
from nettle.experiment.report import ReportFiles
from nettle.inspect.featurevis import FeatureVis
from nettle.measure import CostReport, count
from nettle.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


class _Tags(HTMLParser):
    """The open tags left over, and whether a close ever came before its open tag."""

    VOID = frozenset({"img", "br", "hr", "meta", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ok = True

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        self.ok = self.ok and bool(self.stack) and self.stack.pop() == tag


def _well_formed(html: str) -> bool:
    tags = _Tags()
    tags.feed(html)
    return html.startswith(("<table", "<div")) and tags.ok and not tags.stack


def test_cost_report_repr_and_html():
    r = count(create_model("simple-cnn", in_channels=1), (1, 8, 8))
    assert repr(r) == (
        "CostReport(model='SimpleCNN', params=94,186, macs=2,379,008, modules=13, unsupported=0)"
    )
    html = r._repr_html_()
    assert _well_formed(html)
    assert "<th>params</th><td>94,186</td>" in html and "<td>2,379,008</td>" in html
    assert "<th>input</th><td>1x8x8</td>" in html


def test_cost_report_repr_names_what_differs_from_the_usual():
    r = CostReport(
        params=1000,
        trainable_params=1000,
        macs=5000,
        macs_executed=6000,
        convention="deficient-efficient",
        input_shape=[3, 8, 8],
        unsupported=["aten.fft in <x>"],
        backward_macs=9000,
    )
    assert repr(r) == (
        "CostReport(params=1,000, macs=5,000, macs_executed=6,000, backward_macs=9,000, "
        "convention='deficient-efficient', modules=0, unsupported=1)"
    )
    html = r._repr_html_()
    assert _well_formed(html) and "<td>15,000</td>" in html and "aten.fft in &lt;x&gt;" in html


def test_repr_of_a_deep_model_stays_short():
    r = count(nn.Sequential(*[nn.Linear(4, 4) for _ in range(100)]), (4,), backward=True)
    assert len(r.modules) == 100
    assert len(repr(r)) < 300 and "\n" not in repr(r)


def test_to_dataframe_has_one_row_per_module():
    r = count(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), (4,))
    frame = r.to_dataframe()
    assert list(frame.columns) == [
        "name",
        "type",
        "params",
        "macs",
        "macs_executed",
        "calls",
        "input_shape",
        "output_shape",
        "source",
    ]
    assert frame[["name", "type", "params", "macs"]].values.tolist() == [
        ["0", "Linear", 15, 12],
        ["1", "ReLU", 0, 0],
    ]


def test_to_dataframe_without_pandas_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        count(nn.Linear(4, 3), (4,)).to_dataframe()


def test_robustness_result_repr_and_html():
    result = RobustnessResult(
        clean_accuracy=0.9,
        eps=[0.1, 0.3],
        accuracy={"fgsm": {0.1: 0.5, 0.3: 0.25}, "pgd": {0.1: 0.4, 0.3: 0.125}},
        worst={0.1: 0.4, 0.3: 0.125},
        warnings=["FGSM beats PGD at eps <0.1>"],
        examples=8,
        attacked=10,
    )
    assert repr(result) == (
        "RobustnessResult(clean=90.0%, examples=8, eps=[0.1, 0.3], worst=[40.0%, 12.5%], "
        "attacks=['fgsm', 'pgd'], warnings=1)"
    )
    html = result._repr_html_()
    assert _well_formed(html)
    assert "clean accuracy 90.0% on 8 examples" in html and "<th>eps 0.3</th>" in html
    assert "<tr><th>worst</th><td>40.0%</td><td>12.5%</td></tr>" in html
    assert "eps &lt;0.1&gt;" in html


def test_report_files_repr_and_html():
    files = ReportFiles(
        Path("out/report.html"),
        Path("out/report.md"),
        {"tradeoff": Path("out/tradeoff.png")},
        [{"name": "a"}, {"name": "b"}],
    )
    assert repr(files) == (
        "ReportFiles(html='out/report.html', markdown='out/report.md', plots=1, records=2)"
    )
    html = files._repr_html_()
    assert _well_formed(html) and "<td>out/tradeoff.png</td>" in html
    assert "<th>records</th><td>2</td>" in html


def test_feature_vis_repr_and_html_with_its_image():
    image = torch.zeros(3, 4, 6)
    image[0] = 1.0
    vis = FeatureVis(image, [0.5, 1.0], 1.25, "channel(conv, 0)")
    assert repr(vis) == "FeatureVis(objective='channel(conv, 0)', image=3x4x6, steps=2, value=1.25)"
    html = vis._repr_html_()
    assert _well_formed(html) and "<td>1.25</td>" in html
    data = re.search(r'src="data:image/png;base64,([^"]+)"', html)[1]
    png = Image.open(io.BytesIO(base64.b64decode(data)))
    assert (png.mode, png.size, png.getpixel((0, 0))) == ("RGB", (6, 4), (255, 0, 0))


def test_feature_vis_of_other_channel_counts_has_no_image():
    vis = FeatureVis(torch.zeros(2, 4, 4), [], 0.0, "x")
    assert vis._png() is None and "<img" not in vis._repr_html_()
    assert FeatureVis(torch.ones(1, 2, 2))._png().startswith(b"\x89PNG")
