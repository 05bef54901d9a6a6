import json

import pytest

from nettle.config import ConfigError, load_config_dict
from nettle.experiment.run import load_run_model, prepare_run_dir, run_experiment


def _cfg(**train):
    tree = {
        "name": "t",
        "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False, **train},
    }
    return load_config_dict(tree)


def _snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_run_writes_the_contract_and_is_not_redone(tmp_path):
    run = tmp_path / "run"
    summary = run_experiment(_cfg(), run)
    assert summary["status"] == "done" and summary["run_id"] and summary["params"] > 0
    for name in ("config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    env = json.loads((run / "env.json").read_text())
    assert {"torch", "python", "git_commit", "seed", "device"} <= set(env)
    before = _snapshot(run)
    again = run_experiment(_cfg(), run)
    assert again == summary and _snapshot(run) == before
    model = load_run_model(run)
    assert not model.training


def test_different_config_is_refused_and_nothing_touched(tmp_path):
    run = tmp_path / "run"
    run_experiment(_cfg(), run)
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"run .* different config \(differs in: train.seed\)"):
        run_experiment(_cfg(seed=5), run)
    assert _snapshot(run) == before


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no config.yaml"):
        prepare_run_dir(_cfg(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
