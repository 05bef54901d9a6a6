"""Jobs with stages after training: a run is finished only when its stages.json says done."""

import json
import sys
from pathlib import Path

import pytest

from nettle.experiment import worker
from nettle.experiment.schedule import run_sweep
from nettle.experiment.spec import plan_sweep
from nettle.experiment.store import Store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

# Trains (writes a done summary), then evaluates; the first attempt dies in the evaluation.
JOB = r"""
import json, sys
from pathlib import Path
run_dir = Path(sys.argv[2])
(run_dir / "stages.json").write_text(json.dumps({"status": "running"}))
(run_dir / "summary.json").write_text(json.dumps({"status": "done", "params": 10, "test_acc": 0.5}))
flag = run_dir / "crashed-once"
if not flag.exists():
    flag.write_text("")
    sys.exit(1)
stages = {"status": "done", "metrics": {"macs": 123, "robust_acc_pgd_eps0p1": 0.25}}
(run_dir / "stages.json").write_text(json.dumps(stages))
"""


def test_unfinished_stages_run_again_and_their_metrics_are_recorded(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    plan = plan_sweep({"name": "staged", "base": {"train": {"epochs": 1}}})
    store = Store(tmp_path / "nettle.db")

    def command(config: Path, run_dir: Path) -> list[str]:
        return [sys.executable, str(job), str(config), str(run_dir)]

    first = run_sweep(plan, store, root=tmp_path, retries=0, command=command, poll=0.01)
    run_id = plan.runs[0].id
    assert list(first.failed) == [run_id]
    # summary.json says done but the stages do not: the next call runs it again
    second = run_sweep(plan, store, root=tmp_path, retries=0, command=command, poll=0.01)
    assert second.done == [run_id] and second.skipped == []
    row = store.get(run_id)
    assert row["status"] == "done"
    assert row["metrics"] == {
        "params": 10,
        "test_acc": 0.5,
        "macs": 123,
        "robust_acc_pgd_eps0p1": 0.25,
    }
    third = run_sweep(plan, store, root=tmp_path, command=command, poll=0.01)
    assert third.skipped == [run_id]


def test_read_summary_folds_in_the_stages(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "done", "params": 3}))
    assert worker.read_summary(tmp_path) == {"status": "done", "params": 3}
    (tmp_path / "stages.json").write_text(json.dumps({"status": "running"}))
    assert worker.read_summary(tmp_path)["status"] == "stages running"
    (tmp_path / "stages.json").write_text("{cut off")
    assert worker.read_summary(tmp_path)["status"] == "stages unreadable"
    (tmp_path / "stages.json").write_text(json.dumps({"status": "done", "metrics": {"macs": 7}}))
    summary = worker.read_summary(tmp_path)
    assert summary == {"status": "done", "params": 3, "macs": 7}
    assert worker.final_metrics(summary) == {"status": "done", "params": 3, "macs": 7}
