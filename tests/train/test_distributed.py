"""Data-parallel training under a real `torchrun`: 2 CPU processes (Gloo) on the digits data."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nettle.models.build import load_run_model
from nettle.train.checkpoint import load_checkpoint
from nettle.train.data import create_dataset
from nettle.train.loop import evaluate

CONFIG = """
name: ddp-test
model: {name: simple-cnn, kwargs: {width: 8}}
data:
  name: digits
  batch_size: 16
  augment: {crop_padding: 1, noise_std: 0.05}
train:
  epochs: 2
  seed: 3
  device: cpu
  checkpoint_steps: 7
  log_every: 1
  optim: {name: sgd, lr: 0.05}
  schedule: {name: cosine}
"""
STEPS = 2 * 45  # 1,437 // 2 = 718 images per rank in batches of 16, two epochs

# one global batch of 32 either as 1 process x 32 or 2 processes x 16; no BatchNorm, no dropout;
# a third argument `free` trains adversarially (the perturbation carried between replays)
SCRIPT = """
import sys
from pathlib import Path
import torch
from torch import nn
from torch.utils.data import TensorDataset
from nettle.config import TrainConfig
from nettle.train.data import create_dataset
from nettle.train.distributed import distributed_session
from nettle.train.loop import Trainer

out, batch = sys.argv[1], int(sys.argv[2])
Path(out).mkdir(exist_ok=True)
with distributed_session("cpu"):
    x, y = create_dataset("digits").tensors
    data = TensorDataset(x[:1436], y[:1436])  # even: equal shards, nothing dropped
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    cfg = TrainConfig(
        epochs=2, seed=5, device="cpu", tensorboard=False,
        optim={"name": "sgd", "lr": 0.1}, schedule={"name": "cosine"},
    )
    objective = None
    if sys.argv[3:] == ["free"]:  # free adversarial training, each batch replayed twice
        from nettle.config import AdversarialConfig
        from nettle.train.adversarial import create_adversarial
        objective = create_adversarial(AdversarialConfig(mode="free", eps=0.1, replays=2))
    Trainer(model, data, None, cfg, batch_size=batch, run_dir=out, objective=objective).fit()
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _launcher(nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_port()),
    ]


def _torchrun_train(cfg: Path, out: Path) -> subprocess.Popen:
    """`torchrun --nproc-per-node 2 -m nettle train CFG -o OUT --json`, in its own group."""
    return subprocess.Popen(
        [*_launcher(2), "-m", "nettle", "train", str(cfg), "-o", str(out), "--json"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG)
    return path


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def test_two_processes_train_rank0_writes_and_test_metrics_cover_the_test_set(tmp_path):
    out = tmp_path / "run"
    stdout = _finish(_torchrun_train(_config(tmp_path), out))
    reports = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 1 prints nothing
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    tb = [f for f in files if f.startswith("tb/")]
    # one process writes TensorBoard (the scalars, then the HParams view): rank 0's
    assert len(tb) == 2 and len({f.rsplit(".", 2)[-2] for f in tb}) == 1
    evaluated = [f for f in files if f.startswith("eval/")]
    assert len(evaluated) == 1 and evaluated[0].startswith("eval/count-")  # counted once
    assert sorted(set(files) - set(tb) - set(evaluated)) == [
        ".lock",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "summary.json",
    ]
    assert (tmp_path / "nettle.db").is_file()  # recorded in the store beside the run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"] == STEPS
    assert json.loads((out / "env.json").read_text())["world_size"] == 2
    steps = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == list(range(1, STEPS + 1))
    # the reduced test metrics are those of the whole test set, evaluated in one process
    test = create_dataset("digits", "test")
    single = evaluate(load_run_model(out, which="last"), test)
    final = summary["final"]
    assert final["test_acc"] == single["acc"]
    assert final["test_loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert 0.3 < final["test_acc"] < 1.0
    # the training sums cover both shards: 2 x 718 examples per epoch
    assert load_checkpoint(out / "checkpoints" / "last.pt")["state"]["epoch"] == 2


def _train_script(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """The script's run as one process x 32 and as two ranks x 16: (one, two)."""
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.Popen(
        [sys.executable, str(script), str(one), "32", *extra], env=_env(), stderr=subprocess.PIPE
    )
    double = subprocess.Popen(
        [*_launcher(2), str(script), str(two), "16", *extra], env=_env(), stderr=subprocess.PIPE
    )
    for proc in (single, double):
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-3000:]
    return one, two


def test_two_ranks_with_half_batches_equal_one_process_with_the_whole_batch(tmp_path):
    one, two = _train_script(tmp_path)
    a, b = _weights(one), _weights(two)
    assert load_checkpoint(two / "checkpoints" / "last.pt")["state"]["step"] == 2 * 45
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)  # and training moved them: they are not the initial weights
    initial = torch.nn.Linear(64, 32).weight
    assert (a["1.weight"] - initial).abs().max() > 1e-2
    assert (two / "metrics.jsonl").read_text().count('"kind": "epoch"') == 2


def _steps_logged(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.jsonl").read_bytes().count(b'"kind": "step"')
    except FileNotFoundError:
        return 0


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
# after the first checkpoint (step 7) and before the second; in epoch 2 of 2 (45 steps each)
@pytest.mark.parametrize("kill_at", [8, 52])
def test_sigkill_of_the_process_group_then_rerun_equals_an_uninterrupted_run(tmp_path, kill_at):
    cfg = _config(tmp_path)
    reference = _torchrun_train(cfg, tmp_path / "ref")
    victim_dir = tmp_path / "victim"
    victim = _torchrun_train(cfg, victim_dir)
    last = victim_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 90
    while victim.poll() is None and time.time() < deadline:
        if last.exists() and _steps_logged(victim_dir) >= kill_at:
            break
        time.sleep(0.002)
    workers = _children(victim.pid)
    assert len(workers) == 2
    os.killpg(victim.pid, signal.SIGKILL)  # torchrun's group; its workers have their own
    assert victim.wait() == -signal.SIGKILL
    deadline = time.time() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.time() < deadline:
        time.sleep(0.01)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)  # they died with torchrun
    assert not (victim_dir / "summary.json").exists()
    killed_at = load_checkpoint(last)["state"]["step"]
    assert kill_at - 7 <= killed_at < STEPS  # at most one checkpoint interval lost
    _finish(_torchrun_train(cfg, victim_dir))
    _finish(reference)
    a, b = _weights(tmp_path / "ref"), _weights(victim_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    summary = json.loads((victim_dir / "summary.json").read_text())
    assert summary["resumed"] is True and summary["steps"] == STEPS
    records = [json.loads(s) for s in (victim_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, STEPS + 1))
    ref = [json.loads(s) for s in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records if r["kind"] == "step"] == [
        r["loss"] for r in ref if r["kind"] == "step"
    ]


@pytest.mark.slow
def test_a_refused_run_dir_stops_every_rank_with_the_same_one_line_error(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    proc = _torchrun_train(_config(tmp_path), out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [s for s in err.decode().splitlines() if s.startswith("nettle train: error:")]
    # each rank refuses with rank 0's line; torchrun stops the others as soon as the first
    # exits, so a rank still unwinding (rank 0 closes its progress bar) may print nothing
    assert 1 <= len(lines) <= 2 and "holds no config.yaml" in lines[0] and len(set(lines)) == 1
    assert "[rank1]: Traceback" not in err.decode()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_free_adversarial_training_on_two_ranks_equals_one_process(tmp_path):
    one, two = _train_script(tmp_path, "free")
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    # two replays of each of the 45 batches of 32 per epoch, two epochs
    state = load_checkpoint(two / "checkpoints" / "last.pt")
    assert state["state"]["step"] == 2 * 2 * 45
    # the carried perturbation, (32, 1, 8, 8) in one process: rank r holds the positions r::2
    delta = load_checkpoint(one / "checkpoints" / "last.pt")["objective"]["delta"]
    assert delta.shape == (32, 1, 8, 8)
    torch.testing.assert_close(state["objective"]["delta"], delta[0::2])
    assert delta.abs().max().item() == pytest.approx(0.1)  # steps of eps, clipped to eps
