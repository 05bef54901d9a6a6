import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nettle.cli import main
from nettle.train.checkpoint import load_checkpoint

CONFIG = """
name: kill-test
model: {name: simple-cnn, kwargs: {width: 8}}
data:
  name: digits
  batch_size: 16
  augment: {crop_padding: 1, noise_std: 0.05}
train:
  epochs: 3
  seed: 3
  device: cpu
  checkpoint_steps: 7
  log_every: 1
  tensorboard: false
  optim: {name: sgd, lr: 0.05}
  schedule: {name: cosine}
"""
STEPS = 3 * 90  # 1,437 training images in batches of 16


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG)
    return path


def _train(cfg: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "nettle", "train", str(cfg), "-o", str(out), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _steps_logged(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.jsonl").read_bytes().count(b'"kind": "step"')
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The config and its uninterrupted run, trained in this process with one thread (as the
    subprocesses: OMP_NUM_THREADS=1)."""
    folder = tmp_path_factory.mktemp("reference")
    cfg = _write_config(folder)
    assert main(["train", str(cfg), "-o", str(folder / "ref"), "--json"]) == 0
    return cfg, folder / "ref"


# after the first checkpoint (step 7) and before the second; in epoch 2 of 3 (90 steps each)
@pytest.mark.parametrize("kill_at", [8, 100])
def test_sigkill_then_rerun_gives_bitwise_identical_weights(tmp_path, reference, kill_at):
    cfg, ref_dir = reference
    victim_dir = tmp_path / "victim"
    victim = _train(cfg, victim_dir)
    last = victim_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 60
    while victim.poll() is None and time.time() < deadline:
        if last.exists() and _steps_logged(victim_dir) >= kill_at:
            break
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (victim_dir / "summary.json").exists()  # killed mid-run, not after the end
    killed_at = load_checkpoint(last)["state"]["step"]
    assert kill_at - 7 <= killed_at < STEPS  # at most one checkpoint interval lost
    rerun = _train(cfg, victim_dir)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()
    a = load_checkpoint(ref_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(last)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    summary = json.loads((victim_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["resumed"] is True
    assert summary["steps"] == STEPS
    assert len(json.loads((victim_dir / "env.json").read_text())["resumes"]) == 1
    # the metrics of the resumed run are those of the reference: no step lost or repeated
    ref, got = _records(ref_dir), _records(victim_dir)
    assert [r["step"] for r in got if r["kind"] == "step"] == list(range(1, STEPS + 1))
    assert [r["epoch"] for r in got if r["kind"] == "epoch"] == [1, 2, 3]
    same = ("kind", "step", "loss", "lr")
    assert [{k: r.get(k) for k in same} for r in got if r["kind"] == "step"] == [
        {k: r.get(k) for k in same} for r in ref if r["kind"] == "step"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {epochs: 2, epochz: 3}\n", "train.epochz: unknown key"),
        ("train: {epochs: many}\n", "train.epochs: Input should be a valid integer"),
        ("model: {name: resnet9}\n", "unknown model 'resnet9'"),
        ("data: {name: svhn}\n", "unknown dataset 'svhn'"),
        ("train: [1, 2]\n", "train: Input should be a valid dictionary"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code = main(["train", str(cfg), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such config file" in capsys.readouterr().err


def test_overrides_from_the_command_line(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    code = main(
        [
            "train",
            str(cfg),
            "-o",
            str(tmp_path / "o"),
            "--set",
            "train.epochs=1",
            "--set",
            "train.checkpoint_steps=null",
            "--json",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert '"epochs": 1' in out and '"status": "done"' in out


def test_epoch_lines_show_the_phase_breakdown(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    code = main(["train", str(cfg), "-o", str(tmp_path / "o"), "--set", "train.epochs=1"])
    assert code == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "epoch 1: train loss " in text
    assert "phases (share, median per step): " in text and "forward " in text
    assert f"run dir: {tmp_path / 'o'}  status: done" in captured.out


def test_nonfinite_loss_is_a_one_line_error_with_a_snapshot(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    out = tmp_path / "nan"
    code = main(
        [
            "train",
            str(cfg),
            "-o",
            str(out),
            "--set",
            "train.optim.lr=1e12",
            "--set",
            "train.epochs=1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("nettle train: stopped: loss became nan at step ")
    snapshot = err[-1].rsplit("debug snapshot ", 1)[1]
    assert Path(snapshot).parent == out / "checkpoints" and Path(snapshot).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "nonfinite" and summary["error"] in err[-1]
    assert load_checkpoint(snapshot)["batch"]["x"].shape[1:] == (1, 8, 8)


def test_a_corrupt_checkpoint_on_resume_is_a_one_line_error(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    out = tmp_path / "o"
    args = ["train", str(cfg), "-o", str(out), "--set", "train.epochs=1", "--json"]
    assert main(args) == 0
    (out / "summary.json").unlink()  # as if killed after its last checkpoint
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{last}: unreadable checkpoint (truncated or corrupt" in err


def test_epoch_line_shows_character_error_rate_when_recorded():
    from nettle.cli.train import format_epoch

    record = {"epoch": 3, "train_loss": 0.5, "train_acc": 0.9, "lr": 0.01, "time": 1.0}
    assert "CER" not in format_epoch(record)
    line = format_epoch(record | {"test_acc": 0.975, "test_cer": 0.0042})
    assert "test acc 97.50%" in line and "test CER 0.42%" in line
