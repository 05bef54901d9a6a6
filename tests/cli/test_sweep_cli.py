import json

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
