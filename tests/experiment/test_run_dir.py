import json

import pytest

from nettle.config import ConfigError, load_config_dict
from nettle.experiment.run import prepare_run_dir, run_experiment
from nettle.models.build import load_run_model


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


def test_model_defaults_come_from_the_data_set_unless_set():
    from nettle.models.build import build_model
    from nettle.train.data import get_dataset_info

    def cfg(**model):
        return load_config_dict({"model": {"name": "simple-cnn", **model}})

    info = get_dataset_info("digits")
    default = build_model(cfg(kwargs={"width": 4}))
    assert default.normalize.mean.flatten().tolist() == pytest.approx(info.mean)
    assert default.net.fc.out_features == 10 and default.net.stem[0].in_channels == 1
    mine = build_model(cfg(kwargs={"width": 4, "mean": [0.5], "std": [0.25]}, num_classes=3))
    assert mine.normalize.mean.flatten().tolist() == [0.5] and mine.net.fc.out_features == 3
    bare = build_model(cfg(kwargs={"width": 4, "mean": None, "std": None}))
    assert not hasattr(bare, "normalize") and bare.stem[0].in_channels == 1
    three = build_model(cfg(kwargs={"width": 4}, in_channels=3))  # not the data set's channels
    assert not hasattr(three, "normalize") and three.stem[0].in_channels == 3
