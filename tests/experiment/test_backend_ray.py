"""The Ray backend on a real local Ray cluster: stand-in jobs and a real digits sweep."""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_schedule import JOB, TINY, _plan, _starts, _wait  # noqa: E402

from nettle.experiment import worker  # noqa: E402
from nettle.experiment.backends.ray import run_sweep_ray  # noqa: E402
from nettle.experiment.record import run_dir_of  # noqa: E402
from nettle.experiment.schedule import run_sweep  # noqa: E402
from nettle.experiment.spec import plan_sweep  # noqa: E402
from nettle.experiment.store import Store  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return lambda config, run_dir: [sys.executable, str(path), str(config), str(run_dir)]


def test_each_run_done_once_failure_recorded_and_done_runs_skipped(cluster, tmp_path, job):
    plan = _plan("ray", [{"train.seed": 0}, {"train.seed": 1}, {"model.kwargs.mode": "raise"}])
    store = Store(tmp_path / "nettle.db")
    result = run_sweep_ray(plan, store, root=tmp_path, command=job, retries=1)
    ok, bad = [r.id for r in plan.runs[:2]], plan.runs[2].id
    assert sorted(result.done) == sorted(ok)
    assert result.failed == {bad: "exit 1: RuntimeError: boom in the job"}
    for run_id in ok:
        row = store.get(run_id)
        assert (row["status"], row["attempts"], row["metrics"]["test_acc"]) == ("done", 1, 0.52)
        (start,) = _starts(run_dir_of(tmp_path, "ray", run_id))
        assert start["NETTLE_RUN_ID"] == run_id and start["CUDA_VISIBLE_DEVICES"] == ""
        assert start["OMP_NUM_THREADS"] == "1" and start["pgid"] == start["pid"]
    row = store.get(bad)
    assert (row["status"], row["attempts"], row["reason"]) == ("failed", 2, result.failed[bad])
    assert "stand-in job raise" in row["log_tail"]
    log = (run_dir_of(tmp_path, "ray", bad) / "log.txt").read_text()
    assert log.count("--- nettle sweep (ray): attempt") == 2

    again = run_sweep_ray(plan, store, root=tmp_path, command=job, retries=0)
    assert sorted(again.skipped) == sorted(ok) and again.done == []
    assert all(len(_starts(run_dir_of(tmp_path, "ray", i))) == 1 for i in ok)


def test_sigint_cancels_every_task_and_leaves_no_process(cluster, tmp_path, job):
    plan = _plan("stop", [{"model.kwargs.mode": "stubborn"}, {"train.seed": 1}], 3, sleep=30)
    dirs = [run_dir_of(tmp_path, "stop", r.id) for r in plan.runs]
    stubborn = dirs[0] / "child.pid"

    def interrupt():
        _wait(lambda: all((d / "starts.jsonl").exists() for d in dirs) and stubborn.exists())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.monotonic()
    result = run_sweep_ray(plan, tmp_path / "nettle.db", root=tmp_path, command=job, grace=1)
    assert time.monotonic() - t0 < 25
    assert result.interrupted and sorted(result.preempted) == sorted(r.id for r in plan.runs)
    store = Store(tmp_path / "nettle.db")
    assert [r["status"] for r in store.query(sweep="stop")] == ["preempted", "preempted"]
    child = int(stubborn.read_text())
    for run_dir in dirs:
        (start,) = _starts(run_dir)
        _wait(lambda start=start: worker.group_members(start["pgid"]) == [], 10)
    _wait(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 10)


def _zombie(pid):
    fields = worker._stat(pid)
    return fields is None or fields[0] == "Z"


@pytest.mark.slow
def test_real_digits_sweep_metrics_equal_the_local_backend(cluster, tmp_path):
    evaluate = {"attacks": {"fgsm": {}, "pgd": {"steps": 2}}, "eps": [0.1], "limit": 30}
    base = TINY | {"evaluate": evaluate}
    plan = plan_sweep({"name": "digits", "base": base, "grid": {"train.seed": [0, 1]}})
    local = run_sweep(plan, root=tmp_path / "local", slots=2)
    remote = run_sweep_ray(plan, root=tmp_path / "ray", num_cpus_per_run=1)
    assert local.ok and remote.ok and sorted(remote.done) == sorted(local.done)
    for run in plan.runs:
        want = Store(tmp_path / "local" / "nettle.db").get(run.id)["metrics"]
        got = Store(tmp_path / "ray" / "nettle.db").get(run.id)["metrics"]
        assert want["test_acc"] > 0.1 and got["test_acc"] == want["test_acc"]
        for key in ("test_acc", "test_loss", "train_loss", "params", "macs", "macs_executed"):
            assert got.get(key) == want.get(key), key
        # the same evaluation stages ran on the cluster: the same robust accuracy rows
        rows = [Store(tmp_path / b / "nettle.db").get(run.id) for b in ("local", "ray")]
        keep = ("attack", "options", "eps", "examples", "accuracy", "clean_acc")
        local_rows, remote_rows = ([{k: r[k] for k in keep} for r in x["robustness"]] for x in rows)
        assert len(local_rows) == 2 and remote_rows == local_rows
        run_dir = run_dir_of(tmp_path / "ray", "digits", run.id)
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "done"


def test_cli_names_the_missing_ray_extra(tmp_path, monkeypatch, capsys):
    from nettle.cli import main

    spec = tmp_path / "sweep.yaml"
    spec.write_text("name: cli\ngrid: {train.seed: [0]}\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "nettle.experiment.backends.ray")
    assert main(["sweep", "run", str(spec), "--backend", "ray", "--root", str(tmp_path)]) == 2
    assert "pip install 'nettle[ray]'" in capsys.readouterr().err
