"""Two processes never train one run dir: the second exits 2 naming the first's pid."""

import json
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock")

CONFIG = {
    "name": "locked",
    "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
    "data": {"name": "digits", "batch_size": 16},
    # long enough that the second process starts (a few seconds) while the first trains
    "train": {"epochs": 40, "device": "cpu", "tensorboard": False},
    "evaluate": {"count": None},
}


def test_a_second_train_on_the_same_run_dir_exits_naming_the_holder(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run_dir = tmp_path / "runs" / "locked" / "a"
    argv = [sys.executable, "-m", "nettle", "train", str(config), "-o", str(run_dir), "--json"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    lock = run_dir / ".lock"
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run finished before the second could start"
    second = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is being trained by pid {first.pid}" in lines[0], lines
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    epochs = [
        json.loads(line)["epoch"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "epoch"
    ]
    assert epochs == list(range(1, 41))
    # once the holder is gone, the same command reports the finished run
    again = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "done"
