"""The local scheduler with real subprocesses: stand-in jobs that keep the trainer's contract."""

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nettle.experiment import worker
from nettle.experiment.record import run_dir_of
from nettle.experiment.schedule import run_sweep
from nettle.experiment.spec import plan_sweep
from nettle.experiment.store import Store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

# A stand-in for `nettle train CONFIG -o RUN_DIR`: resumes from checkpoints/last.json, writes
# metrics.jsonl and summary.json; model.kwargs pick its behaviour (mode) and epoch time (sleep).
JOB = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import yaml

cfg = yaml.safe_load(Path(sys.argv[1]).read_text())
run_dir = Path(sys.argv[2])
kw = cfg["model"]["kwargs"]
mode, sleep = kw.get("mode", "ok"), kw.get("sleep", 0.05)
env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "NETTLE_RUN_ID")}
with open(run_dir / "starts.jsonl", "a") as f:
    f.write(json.dumps(env | {"pid": os.getpid(), "pgid": os.getpgid(0), "t": time.time()}) + "\n")
print("stand-in job", mode, flush=True)
if mode == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
if mode == "raise":
    raise RuntimeError("boom in the job")
if mode == "oom":
    hog = bytearray(4 * 2**30)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (run_dir / "child.pid").write_text(str(child.pid))
ckpt = run_dir / "checkpoints" / "last.json"
start = json.loads(ckpt.read_text())["epoch"] if ckpt.exists() else 0
metrics = run_dir / "metrics.jsonl"
if metrics.exists():  # like the trainer: drop records written after the checkpoint
    keep = [l for l in metrics.read_text().splitlines() if json.loads(l)["epoch"] <= start]
    metrics.write_text("".join(l + "\n" for l in keep))
for epoch in range(start + 1, cfg["train"]["epochs"] + 1):
    time.sleep(sleep)
    with open(metrics, "a") as f:  # like the trainer: the epoch's line, then its checkpoint
        rec = {"kind": "epoch", "epoch": epoch, "step": epoch, "test_acc": 0.5 + epoch / 100}
        f.write(json.dumps(rec | {"resumed_from": start}) + "\n")
    ckpt.parent.mkdir(exist_ok=True)
    (ckpt.parent / "tmp.json").write_text(json.dumps({"epoch": epoch}))
    (ckpt.parent / "tmp.json").replace(ckpt)
    print("epoch", epoch, flush=True)
final = {"epoch": cfg["train"]["epochs"], "test_acc": 0.5 + cfg["train"]["epochs"] / 100}
summary = {"status": "done", "resumed": start > 0, "final": final, "params": 7}
(run_dir / "summary.tmp").write_text(json.dumps(summary))
(run_dir / "summary.tmp").replace(run_dir / "summary.json")
"""


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return lambda config, run_dir: [sys.executable, str(path), str(config), str(run_dir)]


def _plan(name, variants, epochs=2, sleep=0.05):
    base = {"train": {"epochs": epochs}, "model": {"kwargs": {"sleep": sleep}}}
    base["evaluate"] = {"count": None}  # the stand-in job trains nothing to count
    return plan_sweep({"name": name, "base": base, "list": variants})


def _starts(run_dir):
    return [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]


def test_gpu_pinning_one_job_per_gpu_and_done_runs_skipped(tmp_path, job):
    plan = _plan("pin", [{"train.seed": s} for s in range(4)], epochs=2, sleep=0.1)
    store = Store(tmp_path / "nettle.db")
    result = run_sweep(plan, store, root=tmp_path, gpus=["0", "1"], command=job)
    assert result.ok and sorted(result.done) == sorted(r.id for r in plan.runs)
    spans = {"0": [], "1": []}
    for run in plan.runs:
        run_dir = run_dir_of(tmp_path, "pin", run.id)
        (start,) = _starts(run_dir)
        assert start["NETTLE_RUN_ID"] == run.id and start["pgid"] == start["pid"]
        end = (run_dir / "summary.json").stat().st_mtime
        spans[start["CUDA_VISIBLE_DEVICES"]].append((start["t"], end))
        row = store.get(run.id)
        assert (row["status"], row["attempts"], row["metrics"]["test_acc"]) == ("done", 1, 0.52)
    for gpu_spans in spans.values():  # never two jobs on one GPU at once
        gpu_spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(gpu_spans))
    assert [len(v) for v in spans.values()] != [4, 0]
    again = run_sweep(plan, store, root=tmp_path, slots=2, command=job)
    assert again.done == [] and sorted(again.skipped) == sorted(r.id for r in plan.runs)
    assert all(len(_starts(run_dir_of(tmp_path, "pin", r.id))) == 1 for r in plan.runs)


def test_cpu_slots_share_the_cores(tmp_path, job):
    plan = _plan("cpu", [{"train.seed": 0}])
    run_sweep(plan, root=tmp_path, slots=2, command=job)
    (start,) = _starts(run_dir_of(tmp_path, "cpu", plan.runs[0].id))
    cores = len(os.sched_getaffinity(0))
    assert start["CUDA_VISIBLE_DEVICES"] == ""
    assert start["OMP_NUM_THREADS"] == str(max(1, cores // 2))


def test_failures_recorded_with_reasons_and_retried(tmp_path, job):
    modes = ["segv", "raise", "oom", "ok", "ok2"]
    plan = _plan("fail", [{"model.kwargs.mode": m} for m in modes])
    store = Store(tmp_path / "nettle.db")
    events = []
    result = run_sweep(
        plan,
        store,
        root=tmp_path,
        slots=2,
        retries=1,
        mem_limit_gb=1.0,
        command=job,
        progress=lambda event, info: events.append((event, info)),
    )
    ids = {m: r.id for m, r in zip(modes, plan.runs)}
    assert result.failed == {
        ids["segv"]: "killed by SIGSEGV",
        ids["raise"]: "exit 1: RuntimeError: boom in the job",
        ids["oom"]: "out of memory",
    }
    assert sorted(result.done) == sorted([ids["ok"], ids["ok2"]])
    for mode in ("segv", "raise", "oom"):
        row = store.get(ids[mode])
        assert (row["status"], row["attempts"], row["reason"]) == (
            "failed",
            2,
            result.failed[ids[mode]],
        )
        assert "stand-in job " + mode in row["log_tail"]
    assert "MemoryError" in store.get(ids["oom"])["log_tail"]
    log = (run_dir_of(tmp_path, "fail", ids["raise"]) / "log.txt").read_text()
    assert (
        log.count("--- nettle sweep (local): attempt") == 2 and log.count("RuntimeError: boom") == 2
    )
    retried = [i["id"] for e, i in events if e == "failed" and i["retry"]]
    assert sorted(retried) == sorted(ids[m] for m in ("segv", "raise", "oom"))


def _drive(plan, db, root, job, out):  # the scheduler in a forked process
    result = run_sweep(plan, Store(db), root=root, slots=2, grace=0.5, command=job)
    Path(out).write_text(json.dumps(result.to_dict()))


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_stops_every_process_of_every_job(tmp_path, job):
    plan = _plan("term", [{"model.kwargs.mode": "stubborn"}, {"train.seed": 1}], 3, sleep=30)
    db, out = tmp_path / "nettle.db", tmp_path / "result.json"
    Store(db)
    driver = multiprocessing.get_context("fork").Process(
        target=_drive, args=(plan, db, tmp_path, job, out)
    )
    driver.start()
    store = Store(db)
    rows = _wait(
        lambda: (
            [r for r in store.query(status="running") if r["pgid"]]
            if len([r for r in store.query(status="running") if r["pgid"]]) == 2
            else None
        )
    )
    stubborn = run_dir_of(tmp_path, "term", plan.runs[0].id)
    child = int(
        _wait(lambda: (stubborn / "child.pid").exists() and (stubborn / "child.pid").read_text())
    )
    assert not _group_gone(rows[0]["pgid"])
    os.kill(driver.pid, signal.SIGTERM)
    driver.join(30)
    assert driver.exitcode == 0
    result = json.loads(out.read_text())
    assert result["interrupted"] and sorted(result["preempted"]) == sorted(r.id for r in plan.runs)
    for row in rows:  # leaders (one ignoring SIGTERM) and the grandchild: nothing alive
        assert worker.group_members(row["pgid"]) == []
        _wait(lambda row=row: _group_gone(row["pgid"]), 10)  # once init reaped the zombies
    assert not Path(f"/proc/{child}").exists()
    assert [r["status"] for r in store.query(sweep="term")] == ["preempted", "preempted"]


def test_a_sweep_in_another_thread_stops_when_its_stop_event_is_set(tmp_path, job):
    plan = _plan("event", [{"train.seed": 0}], 3, sleep=30)
    stop, store = threading.Event(), Store(tmp_path / "nettle.db")
    with ThreadPoolExecutor(1) as pool:  # no signal handler can reach this thread
        future = pool.submit(
            run_sweep, plan, store, root=tmp_path, grace=0.5, command=job, stop=stop
        )
        (row,) = _wait(lambda: [r for r in store.query(status="running") if r["pgid"]])
        stop.set()
        result = future.result(timeout=30)
    assert result.interrupted and result.preempted == [plan.runs[0].id]
    assert worker.group_members(row["pgid"]) == []
    assert [r["status"] for r in store.query(sweep="event")] == ["preempted"]


def test_stale_running_row_is_cleared_and_only_its_own_processes_killed(tmp_path, job):
    plan = _plan("stale", [{"train.seed": 0}, {"train.seed": 1}])
    store = Store(tmp_path / "nettle.db")
    store.add_runs(
        {
            "id": r.id,
            "config": r.config.model_dump(mode="json"),
            "sweep": "stale",
            "run_dir": str(run_dir_of(tmp_path, "stale", r.id)),
        }
        for r in plan.runs
    )
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(
        sleeper, start_new_session=True, env=os.environ | {worker.MARKER: plan.runs[0].id}
    )
    other = subprocess.Popen(sleeper, start_new_session=True)  # a recycled group id, say
    for run, proc in zip(plan.runs, (ours, other)):
        assert store.claim(run.id, owner="999999999:1")  # a scheduler that is gone
        store.set_process(run.id, proc.pid, proc.pid)
    try:
        events = []
        result = run_sweep(
            plan,
            store,
            root=tmp_path,
            command=job,
            grace=2,
            progress=lambda e, i: events.append((e, i)),
        )
        assert ours.wait(10) == -signal.SIGTERM and other.poll() is None
    finally:
        other.kill()
        other.wait()
        ours.kill()
    assert result.ok and sorted(result.done) == sorted(r.id for r in plan.runs)
    assert sorted(i["killed"] for e, i in events if e == "stale") == [0, 1]
    assert [r["attempts"] for r in store.query(sweep="stale")] == [2, 2]


def test_sigkill_of_the_scheduler_then_every_run_done_exactly_once(tmp_path, job):
    plan = _plan("kill", [{"train.seed": s} for s in range(12)], epochs=3, sleep=0.1)
    db, out = tmp_path / "nettle.db", tmp_path / "result.json"
    store = Store(db)
    driver = multiprocessing.get_context("fork").Process(
        target=_drive, args=(plan, db, tmp_path, job, out)
    )
    driver.start()
    dirs = {r.id: run_dir_of(tmp_path, "kill", r.id) for r in plan.runs}
    ckpt = {i: d / "checkpoints" / "last.json" for i, d in dirs.items()}

    def half_way():
        done = store.query(sweep="kill", status="done")
        running = store.query(sweep="kill", status="running")
        return len(done) >= 4 and any(ckpt[r["id"]].exists() for r in running)

    _wait(half_way)
    os.kill(driver.pid, signal.SIGKILL)
    driver.join(10)
    killed = store.query(sweep="kill", status="running")  # final: its scheduler is dead
    for row in killed:  # the jobs died with their scheduler (PR_SET_PDEATHSIG)
        if row["pgid"]:
            _wait(lambda row=row: _group_gone(row["pgid"]), 10)
    relaunched = {r["id"] for r in killed if not (dirs[r["id"]] / "summary.json").exists()}
    resumed = {i for i in relaunched if ckpt[i].exists()}
    assert resumed and not out.exists()
    before = {i: (d / "config.yaml").stat() for i, d in dirs.items() if d.exists()}
    result = run_sweep(plan, store, root=tmp_path, slots=2, command=job)
    assert result.ok and len(result.done) + len(result.skipped) == 12
    assert relaunched <= set(result.done)
    for run_id, run_dir in dirs.items():
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]  # each trained once
        if run_id in before:  # written once, never rewritten
            now, then = (run_dir / "config.yaml").stat(), before[run_id]
            assert (now.st_ino, now.st_mtime_ns) == (then.st_ino, then.st_mtime_ns)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["resumed"] == (run_id in resumed)
        row = store.get(run_id)
        assert (row["status"], row["metrics"]["test_acc"]) == ("done", 0.53)
        assert row["attempts"] == 1 + (run_id in relaunched)
        log = (run_dir / "log.txt").read_text()  # appended: one header per scheduler call
        assert log.count("--- nettle sweep (local): attempt 1") == 1 + (run_id in relaunched)
    assert store.query(sweep="kill", status="running") == []


TINY = {
    "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
    "data": {"name": "digits", "batch_size": 64},
    "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
}


@pytest.mark.slow
def test_preflight_step_reports_shape_and_name_errors(tmp_path):
    from nettle.experiment.preflight import preflight_config

    good = preflight_config(TINY)
    assert (good["ok"], good["error"], good["oom"]) == (True, None, False)
    shape = preflight_config(TINY | {"data": {"name": "digits", "image_size": 1}})
    assert not shape["ok"] and "Output size is too small" in shape["error"]
    name = preflight_config(TINY | {"model": {"name": "nope"}})
    assert name["error"].startswith("UnknownNameError: unknown model 'nope'")

    plan = plan_sweep(
        {
            "name": "pre",
            "base": TINY,
            "list": [{}, {"data.image_size": 1}, {"model.name": "nope"}],
        }
    )
    store = Store(tmp_path / "nettle.db")
    result = run_sweep(plan, store, root=tmp_path, preflight=True)
    assert not result.ok and result.done == [] and not (tmp_path / "pre").exists()
    assert [(p["name"], p["ok"]) for p in result.preflight] == [
        ("base", True),
        ("data.image_size=1", False),
        ("model.name=nope", False),
    ]
    assert store.get(plan.runs[1].id)["reason"].startswith("preflight: RuntimeError")
    assert store.get(plan.runs[0].id)["status"] == "planned"


@pytest.mark.slow
def test_real_training_killed_with_its_scheduler_resumes_from_checkpoints(tmp_path):
    base = TINY | {"train": TINY["train"] | {"epochs": 12}}
    plan = plan_sweep({"name": "real", "base": base, "grid": {"train.seed": [0, 1, 2, 3]}})
    db, out = tmp_path / "nettle.db", tmp_path / "result.json"
    store = Store(db)
    dirs = {r.id: run_dir_of(tmp_path, "real", r.id) for r in plan.runs}
    driver = multiprocessing.get_context("fork").Process(
        target=_drive, args=(plan, db, tmp_path, None, out)
    )
    driver.start()

    def checkpointed():
        rows = store.query(sweep="real", status="running")
        return any((dirs[r["id"]] / "checkpoints" / "last.pt").exists() for r in rows)

    _wait(checkpointed, 240)
    os.kill(driver.pid, signal.SIGKILL)
    driver.join(10)
    killed = store.query(sweep="real", status="running")
    for row in killed:
        if row["pgid"]:
            _wait(lambda row=row: _group_gone(row["pgid"]), 10)
    relaunched = {r["id"] for r in killed if not (dirs[r["id"]] / "summary.json").exists()}
    resumed = {i for i in relaunched if (dirs[i] / "checkpoints" / "last.pt").exists()}
    assert resumed
    result = run_sweep(plan, store, root=tmp_path, slots=2)
    assert result.ok and len(result.done) + len(result.skipped) == 4
    for run_id, run_dir in dirs.items():
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "done" and summary["resumed"] == (run_id in resumed)
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        epochs = [r["epoch"] for r in map(json.loads, lines) if r["kind"] == "epoch"]
        assert epochs == list(range(1, 13))
        assert store.get(run_id)["metrics"]["best_test_acc"] == summary["best_test_acc"]
