"""The Slurm backend through submitit's local executor (real subprocesses, same code path)."""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

from test_schedule import JOB, TINY, _plan, _starts, _wait  # noqa: E402

from nettle.experiment.backends.slurm import make_executor, run_sweep_slurm  # noqa: E402
from nettle.experiment.record import run_dir_of  # noqa: E402
from nettle.experiment.schedule import run_sweep  # noqa: E402
from nettle.experiment.spec import plan_sweep  # noqa: E402
from nettle.experiment.store import Store  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return lambda config, run_dir: [sys.executable, str(path), str(config), str(run_dir)]


def _local(tmp_path, **kw):
    opts = {"partition": None, "time_min": 60, "gpus_per_node": 0, "cpus_per_task": 1}
    return make_executor(tmp_path / "submitit" / "%j", mem_gb=None, cluster="local", **opts | kw)


def test_each_run_done_once_failure_recorded_and_done_runs_skipped(tmp_path, job):
    plan = _plan("slurm", [{"train.seed": 0}, {"train.seed": 1}, {"model.kwargs.mode": "raise"}])
    store = Store(tmp_path / "nettle.db")
    executor = _local(tmp_path)
    assert type(executor._executor).__name__ == "LocalExecutor"
    result = run_sweep_slurm(plan, store, root=tmp_path, executor=executor, command=job, poll=0.05)
    ok, bad = [r.id for r in plan.runs[:2]], plan.runs[2].id
    assert sorted(result.done) == sorted(ok)
    assert result.failed == {bad: "exit 1: RuntimeError: boom in the job"}
    for run_id in ok:
        row = store.get(run_id)
        assert (row["status"], row["attempts"], row["metrics"]["test_acc"]) == ("done", 1, 0.52)
        (start,) = _starts(run_dir_of(tmp_path, "slurm", run_id))
        assert start["NETTLE_RUN_ID"] == run_id and start["CUDA_VISIBLE_DEVICES"] == ""
        assert start["OMP_NUM_THREADS"] == "1" and start["pgid"] == start["pid"]
    row = store.get(bad)
    assert (row["status"], row["attempts"], row["reason"]) == ("failed", 2, result.failed[bad])
    assert "stand-in job raise" in row["log_tail"]
    again = run_sweep_slurm(plan, store, root=tmp_path, executor=executor, command=job, retries=0)
    assert sorted(again.skipped) == sorted(ok) and again.done == []


def _parent(pid):
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[1])


def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, job):
    plan = _plan("pre", [{"train.seed": 0}], epochs=4, sleep=0.4)
    run_dir = run_dir_of(tmp_path, "pre", plan.runs[0].id)
    ckpt = run_dir / "checkpoints" / "last.json"

    def preempt():  # Slurm's preemption signal (USR2) to the job's task process
        _wait(lambda: ckpt.exists())
        os.kill(_parent(_starts(run_dir)[0]["pid"]), signal.SIGUSR2)

    store = Store(tmp_path / "nettle.db")
    executor = _local(tmp_path)
    threading.Thread(target=preempt, daemon=True).start()
    result = run_sweep_slurm(plan, store, root=tmp_path, executor=executor, command=job, poll=0.05)
    assert result.ok and result.done == [plan.runs[0].id]
    first, second = _starts(run_dir)  # started twice: before and after the requeue
    assert first["pid"] != second["pid"]
    epochs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]  # each epoch trained once
    assert epochs[-1]["resumed_from"] >= 1
    assert json.loads((run_dir / "summary.json").read_text())["resumed"] is True
    row = store.get(plan.runs[0].id)
    assert (row["status"], row["attempts"]) == ("done", 1)
    assert "(requeued 1x)" in (run_dir / "log.txt").read_text()


def test_sigint_cancels_the_jobs_and_marks_them_preempted(tmp_path, job):
    plan = _plan("stop", [{"train.seed": 0}, {"train.seed": 1}], 3, sleep=30)
    dirs = [run_dir_of(tmp_path, "stop", r.id) for r in plan.runs]

    def interrupt():
        _wait(lambda: all((d / "starts.jsonl").exists() for d in dirs))
        os.kill(os.getpid(), signal.SIGINT)

    t0 = time.monotonic()
    threading.Thread(target=interrupt, daemon=True).start()
    executor = _local(tmp_path)
    result = run_sweep_slurm(
        plan, tmp_path / "nettle.db", root=tmp_path, executor=executor, command=job, grace=1
    )
    assert time.monotonic() - t0 < 20
    assert result.interrupted and sorted(result.preempted) == sorted(r.id for r in plan.runs)
    store = Store(tmp_path / "nettle.db")
    assert [r["status"] for r in store.query(sweep="stop")] == ["preempted", "preempted"]
    for run_dir in dirs:
        (start,) = _starts(run_dir)
        _wait(lambda start=start: not os.path.exists(f"/proc/{start['pid']}"), 10)


@pytest.mark.slow
def test_real_digits_sweep_metrics_equal_the_local_backend(tmp_path):
    evaluate = {"attacks": {"fgsm": {}, "pgd": {"steps": 2}}, "eps": [0.1], "limit": 30}
    base = TINY | {"evaluate": evaluate}
    plan = plan_sweep({"name": "digits", "base": base, "grid": {"train.seed": [0, 1]}})
    local = run_sweep(plan, root=tmp_path / "local", slots=2)
    remote = run_sweep_slurm(plan, root=tmp_path / "slurm", cluster="local", cpus_per_task=1)
    assert local.ok and remote.ok and sorted(remote.done) == sorted(local.done)
    for run in plan.runs:
        want = Store(tmp_path / "local" / "nettle.db").get(run.id)["metrics"]
        got = Store(tmp_path / "slurm" / "nettle.db").get(run.id)["metrics"]
        for key in ("test_acc", "test_loss", "train_loss", "params", "macs", "macs_executed"):
            assert got.get(key) == want.get(key), key
        # the same evaluation stages ran on the cluster: the same robust accuracy rows
        rows = [Store(tmp_path / b / "nettle.db").get(run.id) for b in ("local", "slurm")]
        keep = ("attack", "options", "eps", "examples", "accuracy", "clean_acc")
        local_rows, remote_rows = ([{k: r[k] for k in keep} for r in x["robustness"]] for x in rows)
        assert len(local_rows) == 2 and remote_rows == local_rows


def test_cli_names_the_missing_extra_and_refuses_bad_flags(tmp_path, monkeypatch, capsys):
    from nettle.cli import main

    spec = tmp_path / "sweep.yaml"
    spec.write_text("name: cli\ngrid: {train.seed: [0]}\n")
    root = ["--root", str(tmp_path)]
    assert (
        main(["sweep", "run", str(spec), "--backend", "slurm", "--cpus-per-run", "1.5", *root]) == 2
    )
    assert "--cpus-per-run must be a whole number" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.delitem(sys.modules, "nettle.experiment.backends.slurm")
    assert main(["sweep", "run", str(spec), "--backend", "slurm", *root]) == 2
    assert "pip install 'nettle[slurm]'" in capsys.readouterr().err
    assert not (tmp_path / "nettle.db").exists()


@pytest.mark.slow
def test_cli_runs_a_digits_sweep_on_the_slurm_backend(tmp_path, capsys):
    from nettle.cli import main

    spec = tmp_path / "sweep.yaml"
    spec.write_text(json.dumps({"name": "cli", "base": TINY, "grid": {"train.seed": [0]}}))
    args = ["sweep", "run", str(spec), "--backend", "slurm", "--root", str(tmp_path), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and len(result["done"]) == 1
    assert Store(tmp_path / "nettle.db").get(result["done"][0])["status"] == "done"
    assert main(args) == 0  # again: nothing to do
    assert json.loads(capsys.readouterr().out)["skipped"] == result["done"]
