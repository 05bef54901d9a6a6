import json
import sys

from nettle.cli import main
from nettle.experiment.spec import plan_sweep
from nettle.experiment.store import Store


def test_sweep_plan_and_runs(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {train: {epochs: 1}}\ngrid: {train.seed: [0, 1, 2]}\n")
    store_path = tmp_path / "nettle.db"
    plan = plan_sweep(spec)
    store = Store(store_path)
    store.add_run(plan.runs[0].id, plan.runs[0].config.model_dump(mode="json"), sweep="s", name="x")
    store.set_status(plan.runs[0].id, "running")
    store.set_status(plan.runs[0].id, "done")
    store.record_metrics(plan.runs[0].id, {"test_acc": 0.9})
    assert main(["sweep", "plan", str(spec), "--store", str(store_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in out["runs"]] == ["done", "new", "new"]
    assert main(["runs", "--store", str(store_path), "--where", "test_acc>0.5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [plan.runs[0].id]
    assert main(["runs", "--store", str(store_path), "--where", "bogus"]) == 2
    assert "expected KEY OP VALUE" in capsys.readouterr().err
    assert main(["runs", "--store", str(tmp_path / "none.db")]) == 2


STAND_IN = """
import json, sys
from pathlib import Path
import yaml
cfg = yaml.safe_load(Path(sys.argv[1]).read_text())
if cfg["train"]["seed"] == 13:
    raise ValueError("unlucky seed")
summary = {"status": "done", "final": {"test_acc": 0.9 + cfg["train"]["seed"] / 100}}
(Path(sys.argv[2]) / "summary.json").write_text(json.dumps(summary))
"""


def test_sweep_run_json_live_table_and_failures(tmp_path, capsys, monkeypatch):
    from nettle.experiment import schedule

    job = tmp_path / "job.py"
    job.write_text(STAND_IN)
    monkeypatch.setattr(
        schedule, "default_command", lambda c, d: [sys.executable, str(job), str(c), str(d)]
    )
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {evaluate: {count: null}}\ngrid: {train.seed: [1, 2]}\n")
    root = tmp_path / "runs"
    assert main(["sweep", "run", str(spec), "--root", str(root), "--slots", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ids = [r.id for r in plan_sweep(spec).runs]
    assert result["ok"] and sorted(result["done"]) == sorted(ids) and result["failed"] == {}
    assert (
        main(["runs", "--store", str(root / "nettle.db"), "--where", "test_acc>0.915", "--json"])
        == 0
    )
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [ids[1]]
    assert main(["sweep", "plan", str(spec), "--root", str(root), "--json"]) == 0
    assert [r["status"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["done", "done"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: s\nbase: {evaluate: {count: null}}\ngrid: {train.seed: [2, 13]}\n"
    )  # seed 2 is done already
    assert main(["sweep", "run", str(bad), "--root", str(root), "--retries", "0"]) == 1
    out = capsys.readouterr()
    assert "failed" in out.out and "exit 1: ValueError: unlucky seed" in out.out
    assert "1 already done" in out.out and "1 failed" in out.out
    assert main(["sweep", "run", str(bad), "--root", str(root), "--gpus", "0,,1"]) == 2
    assert "is not one GPU id" in capsys.readouterr().err


def test_example_sweep_plans_six_digits_runs():
    from pathlib import Path

    plan = plan_sweep(Path(__file__).parents[2] / "examples" / "sweep-digits.yaml")
    assert plan.name == "sweep-digits" and len(plan.runs) == 6
    assert {(r.config.train.optim.lr, r.config.train.seed) for r in plan.runs} == {
        (lr, s) for lr in (0.02, 0.05, 0.1) for s in (0, 1)
    }
    assert all(
        r.config.model.name == "simple-cnn" and r.config.data.name == "digits" for r in plan.runs
    )
