"""The newlogic grid: its example file plans 12 runs; a 4-run subset runs through the real
sweep machinery (2 CPU slots) and the report's Ablation table shows each run's settings."""

from pathlib import Path

import pytest
import yaml

from nettle.cli import main
from nettle.experiment.report_ablation import ablation_section, varying_keys
from nettle.experiment.spec import load_sweep, plan_sweep

EXAMPLE = Path(__file__).parents[2] / "examples" / "newlogic-grid.yaml"


def test_the_example_plans_twelve_runs_of_unit_loss_and_init():
    plan = plan_sweep(load_sweep(EXAMPLE))
    assert len(plan.runs) == 12
    configs = [r.config.model_dump(mode="json") for r in plan.runs]
    assert varying_keys(configs) == [
        "model.units",
        "model.init",
        "train.loss",
        "train.regularizer",
        "train.regularizer_weight",
    ]


def test_ablation_section_compacts_rules_and_skips_shared_and_execution_keys():
    records = [
        {"config": {"name": "a", "train": {"device": "cpu", "epochs": 2}, "model": {"units": []}}},
        {
            "config": {
                "name": "b",
                "train": {"device": "cuda", "epochs": 2},
                "model": {"units": [{"unit": "relog", "k": None}]},
            },
            "params": 1234,
            "test_acc": 0.5,
        },
    ]
    sec = ablation_section(records)
    heads, rows = sec.table
    assert heads == ["model.units", "params", "test acc (%)"]
    assert rows == [["[]", "", ""], ["[{unit: relog}]", "1,234", "50.00"]]
    assert ablation_section(records[:1]) is None


def _ablation_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    part = markdown.split("### Ablation", 1)[1]
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return cells[0], [c for c in cells[2:]]


@pytest.mark.slow
def test_four_runs_through_the_sweep_and_the_report(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["name"] = "newlogic-subset"
    spec["base"]["train"].update({"epochs": 1, "device": "cpu", "tensorboard": False})
    spec["base"]["data"]["subset"] = 300
    spec["base"]["model"]["init"] = "data"
    spec["grid"] = {"model.units": [[], [{"unit": "relog"}, {"unit": "maxout", "k": 2, "last": 1}]]}
    path = tmp_path / "subset.yaml"
    path.write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    assert main(["sweep", "run", str(path), "--slots", "2", "--root", str(root)]) == 0
    out = tmp_path / "report"
    assert main(["report", "newlogic-subset", "--root", str(root), "-o", str(out)]) == 0
    heads, rows = _ablation_rows((out / "report.md").read_text())
    assert heads == [
        "model.units",
        "train.loss",
        "train.regularizer",
        "train.regularizer_weight",
        "params",
        "test acc (%)",
    ]
    settings = sorted(tuple(r[:4]) for r in rows)
    relog = "[{layers: all, unit: relog}, {k: 2, last: 1, layers: all, unit: maxout}]"
    assert settings == sorted(
        [
            ("[]", "ce", '""', "0.0"),
            ("[]", "bce", "max_fit_l1", "0.01"),
            (relog, "ce", '""', "0.0"),
            (relog, "bce", "max_fit_l1", "0.01"),
        ]
    )
    params = {r[0]: r[4] for r in rows}
    # simple-cnn width 16: 24,058 parameters; the maxout doubles the last conv (+18,432 + 128)
    assert params == {"[]": "24,058", relog: "42,618"}
    assert all(0 <= float(r[5]) <= 100 for r in rows)
