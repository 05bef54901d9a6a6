"""A detector run end to end through the command line: trained, counted, inspected, attacked."""

from __future__ import annotations

import json

import pytest
import yaml

from nettle.cli import main

pytestmark = pytest.mark.slow  # trains a detector and inspects and attacks it (~15 s)

CONFIG = {
    "name": "yolo-tiny",
    "model": {"name": "tiny-yolo", "kwargs": {"width": 4}},
    "data": {"name": "digit-scenes", "batch_size": 32, "subset": 64},
    "train": {
        "epochs": 1,
        "loss": "detection",
        "device": "cpu",
        "tensorboard": False,
        "optim": {"name": "adam", "lr": 0.01},
    },
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    path = root / "yolo.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["train", str(path), "-o", str(root / "run"), "--json"]) == 0
    return root / "run"


def test_a_detector_run_reports_map_and_its_count(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    assert {"test_map50", "test_map", "test_acc"} <= set(final)
    assert 0.0 <= final["test_map"] <= final["test_map50"] <= 1.0
    # width 4, weights + BatchNorm: stem 36 + 8; stage1 288 + 16, 576 + 16; stage2 1152 + 32,
    # 2 x (2304 + 32); head 16 x 15 + 15
    assert summary["params"] == 7051
    # multiply-adds of the convs at 32x32, 16x16, 16x16, 8x8, 8x8, 8x8 and the 8x8 head
    (count,) = (run_dir / "eval").glob("count-*.json")
    assert json.loads(count.read_text())["result"]["macs"] == 1024 * 36 + 256 * (288 + 576) + 64 * (
        1152 + 2 * 2304 + 240
    )


def test_inspect_explains_what_it_cannot_draw_for_a_detector(run_dir, tmp_path):
    out = tmp_path / "inspect"
    assert main(["inspect", str(run_dir), "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "are not class scores" in page
    assert not (out / "attributions.png").exists() and (out / "weights.png").is_file()


def test_nettle_attack_scores_a_detector_by_exact_scenes_and_missed_objects(run_dir, capsys):
    capsys.readouterr()
    code = main(
        [
            "attack",
            str(run_dir),
            "--attacks",
            "pgd",
            "--eps",
            "0.05,0.3",
            "--limit",
            "24",
            "--set",
            "pgd.steps=5",
            "--json",
        ]
    )
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["objective"], r["error_name"], r["examples"]) == ("detection", "miss", 24)
    acc, miss = r["accuracy"]["pgd"], r["errors"]["pgd"]
    assert acc["0.3"] <= acc["0.05"] <= r["clean_accuracy"]
    assert 0.0 <= r["clean_error"] <= miss["0.05"] <= 1.0 and 0.0 <= miss["0.3"] <= 1.0
