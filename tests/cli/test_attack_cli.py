import json
from pathlib import Path

from nettle.cli import main
from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment


def _trained_run(run_dir: Path, epochs: int) -> None:
    """A small simple-cnn (width 8) trained on the digits into `run_dir`."""
    tree = {
        "name": "t",
        "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
        "train": {"epochs": epochs, "device": "cpu", "tensorboard": False},
    }
    run_experiment(load_config_dict(tree), run_dir)


def test_attack_a_run_dir(tmp_path, capsys):
    _trained_run(tmp_path / "run", epochs=2)
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
    stage = Path(out["saved"])
    assert stage.parent == tmp_path / "run" / "eval" and stage.name.startswith("attack-")
    saved = json.loads(stage.read_text())
    assert saved["result"]["worst"] == out["worst"]
    assert saved["settings"] == {
        "attacks": {"fgsm": {}, "pgd": {"steps": 3}},
        "eps": [0.05, 0.2],
        "limit": 40,
        "seed": 0,
    }
    assert stage.with_suffix(".png").stat().st_size > 1000
    before = {p: p.read_bytes() for p in stage.parent.iterdir()}
    for bad, why in [
        (["--attacks", "deepfool"], "unknown attack 'deepfool'"),
        (["--attacks", ""], "--attacks '': name at least one of"),
        (["--eps", "nan"], "--eps 'nan': expected finite numbers above 0"),
        (["--eps", "0.1,-1"], "expected finite numbers above 0"),
        (["--limit", "0"], "--limit 0: expected a number of examples >= 1"),
        (["--limit", "-5"], "--limit -5: expected a number of examples >= 1"),
    ]:
        assert main(["attack", str(tmp_path / "run"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    assert {p: p.read_bytes() for p in stage.parent.iterdir()} == before


def test_attack_with_a_surrogate_adds_transfer_rows(tmp_path, capsys):
    _trained_run(tmp_path / "run", epochs=1)
    ckpt = next((tmp_path / "run" / "checkpoints").glob("*.pt"))
    argv = ["attack", str(tmp_path / "run"), "--attacks", "pgd", "--eps", "0.1", "--limit", "32"]
    assert main([*argv, "--set", "pgd.random_start=false", "--surrogate", str(ckpt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = f"pgd (transfer from {ckpt.stem})"
    assert list(out["accuracy"]) == ["pgd", row]
    # crafted on the same weights with the same seed: the transfer row is the white-box one
    assert out["accuracy"][row] == out["accuracy"]["pgd"]
    assert out["cost"][row]["0.1"]["backwards"] == out["cost"]["pgd"]["0.1"]["backwards"]
    saved = json.loads(Path(out["saved"]).read_text())
    assert saved["settings"]["surrogate"]["name"] == ckpt.stem
    assert len(saved["settings"]["surrogate"]["sha256"]) == 64
    before = sorted((tmp_path / "run" / "eval").iterdir())
    for bad, why in [
        (str(tmp_path / "nope"), "--surrogate"),
        (str(tmp_path / "run" / "config.yaml"), "--surrogate"),
    ]:
        assert main([*argv, "--surrogate", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    assert sorted((tmp_path / "run" / "eval").iterdir()) == before
