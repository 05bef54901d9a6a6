"""Planning a sweep: costs before training, priorities, and hours and dollars from the store."""

import json
import sqlite3

import pytest

from nettle.cli import main
from nettle.config import ConfigError
from nettle.experiment.driver import Driver
from nettle.experiment.estimate import estimate_sweep
from nettle.experiment.spec import plan_sweep
from nettle.experiment.store import Store


def test_runs_of_higher_priority_come_first(tmp_path):
    plan = plan_sweep(
        {
            "name": "p",
            "base": {"evaluate": {"count": None}},
            "list": [{"train.seed": 0}, {"train.seed": 1, "priority": 5}, {"train.seed": 2}],
        }
    )
    driver = Driver(plan, Store(tmp_path / "nettle.db"), tmp_path, 0, None, "local")
    todo = driver.prepare()
    assert [r.config.train.seed for r in todo] == [1, 0, 2]
    # priority is an execution setting: not part of the run's id
    assert (
        plan_sweep({"name": "q", "base": {"priority": 9}}).runs[0].id
        == plan_sweep({"name": "q"}).runs[0].id
    )


def test_hours_and_dollars_from_finished_runs_of_the_same_model_and_data(tmp_path):
    store = Store(tmp_path / "nettle.db")
    done = plan_sweep(
        {"name": "old", "grid": {"train.seed": [0, 1]}, "base": {"train": {"epochs": 4}}}
    )
    for run in done.runs:
        store.add_run(run.id, run.config.model_dump(mode="json"), sweep="old")
        store.set_status(run.id, "done")
    db = sqlite3.connect(tmp_path / "nettle.db")
    for run, seconds in zip(done.runs, (400.0, 800.0)):  # 100 and 200 s per epoch
        db.execute("UPDATE runs SET started=0, finished=? WHERE id=?", (seconds, run.id))
    db.commit()
    db.close()
    plan = plan_sweep(
        {"name": "new", "grid": {"train.seed": [0, 5, 6]}, "base": {"train": {"epochs": 4}}}
    )
    plan.runs[2].config.train.epochs = 8
    est = estimate_sweep(plan, store, usd_per_hour=3.0)
    # seed 0 with 4 epochs is the done run; median 150 s/epoch: 4 and 8 epochs to go
    assert est.estimated == pytest.approx(
        {plan.runs[1].id: 600 / 3600, plan.runs[2].id: 1200 / 3600}
    )
    assert est.hours == pytest.approx(0.5) and est.usd == pytest.approx(1.5)
    other = plan_sweep({"name": "cifar", "base": {"model": {"name": "vgg11"}}})
    unknown = estimate_sweep(other, store, 3.0)
    assert unknown.hours is None
    assert list(unknown.unknown.values()) == ["no finished run of vgg11 on digits in the store"]
    with pytest.raises(ValueError, match="--price must be a finite number"):
        estimate_sweep(plan, store, float("nan"))


def test_plan_prints_costs_and_solves_budgets_without_training(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: b\nbase: {model: {name: simple-cnn, conv: Generic}}\n"
        "grid: {model.budget.params: [5000, 9000]}\n"
    )
    root = tmp_path / "runs"
    assert main(["sweep", "plan", str(spec), "--json", "--root", str(root)]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert [r["params"] for r in rows] == [5002, 9130]
    assert rows[0]["macs"] < rows[1]["macs"] < 2_379_008  # below the dense network's
    assert not root.exists()  # planning writes nothing
    spec.write_text("name: b\nbase: {model: {conv: Shuffle, budget: {params: 100}}}\n")
    with pytest.raises(ConfigError, match=r"model.budget: Shuffle cannot reach 100 params"):
        plan_sweep(spec)
    spec.write_text("name: b\nbase: {model: {budget: {params: 100}}}\n")
    with pytest.raises(ConfigError, match=r"model.budget needs model.conv"):
        plan_sweep(spec)
