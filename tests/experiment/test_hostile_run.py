"""`nettle train` refuses bad runs in one line before it makes or changes a run dir."""

import hashlib
import json

import pytest
import yaml

from nettle.cli import main

TINY = {
    "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
    "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
    "evaluate": {"count": None},
}


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _refused(tmp_path, capsys, argv, why):
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and "Traceback" not in err[0], err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["train.device=tpu"], "train.device 'tpu': expected auto, cpu, cuda"),
        (["train.device=cuda"], "train.device 'cuda': no CUDA GPU is visible here"),
        (["train.device=cuda:3"], "train.device 'cuda:3'"),
        (["model.num_classes=5"], "model.num_classes=5: data set 'digits' has labels up to 9"),
        (["model.kwargs.width=-4"], "model: simple-cnn cannot be built with kwargs"),
        (["model.kwargs.depth=3"], "model: simple-cnn cannot be built with kwargs"),
        (["train.seed=4294967296"], "train.seed"),
        (["train.seed=-1"], "train.seed"),
    ],
)
def test_bad_runs_leave_no_run_dir(tmp_path, capsys, overrides, why):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "runs" / "x" / "run"
    argv = ["train", str(config), "-o", str(out)]
    _refused(tmp_path, capsys, argv + [a for o in overrides for a in ("--set", o)], why)
    assert not (tmp_path / "runs").exists()


def test_output_that_is_a_file_or_a_run_with_a_broken_summary(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    taken = tmp_path / "taken"
    taken.write_text("mine")
    _refused(tmp_path, capsys, ["train", str(config), "-o", str(taken)], "is a file")
    run_dir = tmp_path / "runs" / "x" / "run"
    assert main(["train", str(config), "-o", str(run_dir), "--json"]) == 0
    capsys.readouterr()
    (run_dir / "summary.json").write_text("{not json")
    _refused(tmp_path, capsys, ["train", str(config), "-o", str(run_dir)], "summary.json")
    (run_dir / "summary.json").write_text(json.dumps(["a", "list"]))
    _refused(tmp_path, capsys, ["train", str(config), "-o", str(run_dir)], "not a run's summary")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(TINY | {"train": TINY["train"] | {"seed": 3}}))
    _refused(tmp_path, capsys, ["train", str(other), "-o", str(run_dir)], "differs in: train.seed")
