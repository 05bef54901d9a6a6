import hashlib
import json

import pytest

from nettle.config import ConfigError, config_hash, identity, load_config_dict
from nettle.experiment.run import default_run_dir, prepare_run_dir, run_experiment
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


def _sha256_12(tree) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces), cut to 12 hex digits."""
    canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def test_run_id_is_the_hash_of_the_config_identity():
    cfg = _cfg()
    run_id = _sha256_12(identity(cfg))
    assert config_hash(cfg) == run_id and len(run_id) == 12
    assert default_run_dir(cfg, "runs").as_posix() == f"runs/t/{run_id}"
    # execution settings are left out of the identity; what changes the numbers is not
    assert "device" not in identity(cfg)["train"] and identity(cfg)["train"]["seed"] == 0
    assert config_hash(_cfg(device="cuda")) == run_id
    assert config_hash(_cfg(seed=5)) == _sha256_12(identity(_cfg(seed=5))) != run_id


def test_run_writes_the_contract_and_is_not_redone(tmp_path):
    cfg = _cfg()
    run = default_run_dir(cfg, tmp_path)
    assert run.name == config_hash(cfg) == _sha256_12(identity(cfg))
    summary = run_experiment(cfg, run)
    # simple-cnn, width 4, one channel: convs 1-4-8-16 (3x3, no bias), 3 BNs, Linear 16 -> 10
    params = 9 * (1 * 4 + 4 * 8 + 8 * 16) + 2 * (4 + 8 + 16) + 16 * 10 + 10
    assert (summary["status"], summary["run_id"], summary["params"]) == ("done", run.name, params)
    assert json.loads((run / "summary.json").read_text())["run_id"] == run.name
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
