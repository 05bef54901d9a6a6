"""A kill at every write point of an epoch, then a rerun: each epoch once, the same weights.

The kills are injected (the process SIGKILLs itself right after the chosen write), not left to
timing: after the metrics line of an epoch, after `best.pt`, after `last.pt`, and before the
first checkpoint exists.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")

TINY = {
    "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
    "data": {"name": "digits", "batch_size": 128},
    "train": {"epochs": 3, "device": "cpu", "tensorboard": False, "log_every": 5},
}

# runs TINY in RUN_DIR and SIGKILLs itself right after the N-th call of WHAT
KILLER = textwrap.dedent(
    """
    import os, signal, sys, json
    from pathlib import Path
    import nettle.train.loop as loop
    from nettle.train import metrics
    from nettle.config import load_config_dict
    from nettle.experiment.run import run_experiment

    run_dir, what, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    calls = {"n": 0}

    def counting(fn, match):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            if match(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapped

    if what == "metrics":
        metrics.MetricsWriter.write = counting(
            metrics.MetricsWriter.write, lambda self, record: record["kind"] == "epoch"
        )
    else:
        loop.save_checkpoint = counting(
            loop.save_checkpoint, lambda obj, path: Path(path).name == what
        )
    run_experiment(load_config_dict(json.loads(sys.argv[4])), run_dir)
    """
)


def _epochs(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if json.loads(line)["kind"] == "epoch"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    run_experiment(load_config_dict(TINY), run_dir)
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize(
    "what, nth",
    [
        ("metrics", 1),  # the first epoch's line is written, no checkpoint yet
        pytest.param("metrics", 2, marks=pytest.mark.slow),  # before epoch 2's checkpoints
        pytest.param("best.pt", 2, marks=pytest.mark.slow),  # between best.pt and last.pt
        pytest.param("last.pt", 2, marks=pytest.mark.slow),  # after epoch 2's last.pt
    ],
)
def test_kill_at_each_write_point_then_rerun(tmp_path, reference, what, nth):
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(run_dir), what, str(nth), json.dumps(TINY)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    before = _epochs(run_dir)
    assert before and before[-1] == nth  # the kill came right after the chosen write
    run_experiment(load_config_dict(TINY), run_dir)
    assert _epochs(run_dir) == [1, 2, 3]
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps)
    final = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
