import json

from nettle.cli import main
from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment


def test_attack_a_run_dir(tmp_path, capsys):
    cfg = load_config_dict(
        {
            "name": "t",
            "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
            "train": {"epochs": 2, "device": "cpu", "tensorboard": False},
        }
    )
    run_experiment(cfg, tmp_path / "run")
    code = main(
        [
            "attack",
            str(tmp_path / "run"),
            "--attacks",
            "fgsm,pgd",
            "--eps",
            "0.05,0.2",
            "--set",
            "pgd.steps=3",
            "--limit",
            "40",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["examples"] == 40 and set(out["accuracy"]) == {"fgsm", "pgd"}
    assert out["accuracy"]["pgd"]["0.2"] <= out["accuracy"]["pgd"]["0.05"] <= out["clean_accuracy"]
    saved = json.loads((tmp_path / "run" / "robustness.json").read_text())
    assert saved["worst"] == out["worst"]
    assert (tmp_path / "run" / "robustness.png").stat().st_size > 1000
    assert main(["attack", str(tmp_path / "run"), "--attacks", "deepfool"]) == 2
    assert "unknown attack 'deepfool'" in capsys.readouterr().err
