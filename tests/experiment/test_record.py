"""The experiment record: evaluation stages in the run spec, identity, one store for all."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from nettle.cli import main
from nettle.config import config_hash, load_config_dict
from nettle.experiment.evaluation import collect_stages
from nettle.experiment.run import run_experiment
from nettle.experiment.schedule import run_sweep
from nettle.experiment.store import Store
from nettle.experiment.store_report import report_from_store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

EXAMPLE = Path(__file__).parents[2] / "examples" / "sweep-substitutes.yaml"
TINY = {
    "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
    "data": {"name": "digits", "batch_size": 64},
    "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
}


def _quick_example() -> dict:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["base"]["train"]["epochs"] = 1
    spec["base"]["evaluate"]["attacks"]["pgd"] = {"steps": 3}
    spec["base"]["evaluate"]["limit"] = 40
    return spec


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_sweep_file_trains_counts_and_attacks_and_reruns_only_new_stages(tmp_path):
    spec = _quick_example()
    store = Store(tmp_path / "nettle.db")
    result = run_sweep(spec, store, root=tmp_path, slots=2)
    assert result.ok and len(result.done) == 6
    rows = store.query(sweep="sweep-substitutes")
    for row in rows:
        cfg = load_config_dict(row["config"])
        assert row["status"] == "done"
        # the budget was solved at plan time and the count stage agrees with it
        assert row["metrics"]["params"] == cfg.model.budget.achieved
        assert row["metrics"]["macs"] > 0 and cfg.model.conv.split("_")[0] in {
            "generic",
            "shuffle",
            "hashed",
        }
        keys = {(r["attack"], r["eps"], r["examples"]) for r in row["robustness"]}
        assert keys == {(a, e, 40) for a in ("fgsm", "pgd") for e in (0.05, 0.1)}
        assert all(r["accuracy"] <= 1.0 for r in row["robustness"])
        assert row["robustness"][0]["options"] == {}  # fgsm first, with no options
    files = report_from_store(store, tmp_path / "report", sweep="sweep-substitutes")
    assert {"error_vs_params", "error_vs_macs", "robustness"} <= set(files.plots)
    assert all(r["macs"] and r["params"] and r["robustness"] for r in files.records)

    # other epsilons: no training step runs, the new accuracies stand beside the old ones
    before = {r["id"]: _files(Path(r["run_dir"])) for r in rows}
    spec["base"]["evaluate"]["eps"] = [0.2]
    again = run_sweep(spec, store, root=tmp_path, slots=2)
    assert again.ok and sorted(again.done) == sorted(r["id"] for r in rows)
    for row in store.query(sweep="sweep-substitutes"):
        after = _files(Path(row["run_dir"]))
        for name, data in before[row["id"]].items():
            if name not in ("log.txt", "job.yaml"):
                assert after[name] == data, name  # no checkpoint, metric or stage replaced
        new = set(after) - set(before[row["id"]])
        assert len(new) == 1 and new.pop().startswith("eval/attack-")
        assert {r["eps"] for r in row["robustness"]} == {0.05, 0.1, 0.2}
    # a third call finds everything done
    assert len(run_sweep(spec, store, root=tmp_path, slots=2).skipped) == 6


def test_identity_leaves_out_execution_and_evaluation(tmp_path):
    cfg = load_config_dict(TINY)
    other = load_config_dict(
        TINY
        | {"name": "elsewhere", "priority": 3, "evaluate": {"attacks": {"fgsm": {}}, "eps": [1]}}
        | {"data": TINY["data"] | {"num_workers": 2, "eval_batch_size": 7}}
        | {"train": TINY["train"] | {"device": "cuda", "log_every": 3, "tensorboard": True}}
    )
    assert config_hash(cfg) == config_hash(other)
    assert config_hash(cfg) != config_hash(load_config_dict(TINY | {"train": {"seed": 1}}))


def test_a_run_resumes_with_other_workers_and_logging_and_notes_them(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config_dict(TINY | {"train": TINY["train"] | {"epochs": 2}})
    run_experiment(cfg, run_dir)
    (run_dir / "summary.json").unlink()  # as if killed after its last checkpoint
    lines = (run_dir / "metrics.jsonl").read_text()
    resumed = load_config_dict(
        TINY
        | {"data": TINY["data"] | {"num_workers": 1}}
        | {"train": TINY["train"] | {"epochs": 2, "log_every": 7}}
    )
    summary = run_experiment(resumed, run_dir)
    assert summary["status"] == "done" and summary["resumed"] is True
    assert (run_dir / "metrics.jsonl").read_text() == lines  # nothing trained twice
    env = json.loads((run_dir / "env.json").read_text())
    assert env["execution"]["train.log_every"] == 50
    assert env["resumes"][-1]["execution"]["train.log_every"] == 7
    assert env["resumes"][-1]["execution"]["data.num_workers"] == 1
    changed = load_config_dict(TINY | {"train": TINY["train"] | {"epochs": 2, "seed": 5}})
    with pytest.raises(ValueError, match=r"differs in: train\.seed"):
        run_experiment(changed, run_dir)


def test_a_training_in_two_sweeps_trains_once_and_is_listed_in_both(tmp_path):
    store = Store(tmp_path / "nettle.db")
    first = run_sweep({"name": "one", "base": TINY}, store, root=tmp_path)
    evaluate = {"count": {"convention": "macs+elementwise"}}
    second = run_sweep({"name": "two", "base": TINY | {"evaluate": evaluate}}, store, root=tmp_path)
    (run_id,) = first.done
    assert second.done == [run_id], second  # the new count stage ran; training did not
    row = store.get(run_id)
    assert row["sweeps"] == ["one", "two"] and row["run_dir"] == str(tmp_path / "one" / run_id)
    assert not (tmp_path / "two").exists()
    log = (tmp_path / "one" / run_id / "log.txt").read_text()
    assert (
        log.count("epoch 1") <= 1 and len(list((tmp_path / "one" / run_id / "eval").iterdir())) == 2
    )
    assert [r["id"] for r in store.query(sweep="two")] == [run_id]


def test_nettle_train_and_attack_record_into_the_store_without_replacing_files(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # as a user would: runs/<name>/<id> under the working folder
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY | {"name": "tiny"}))
    run_dir = Path("runs") / "tiny" / "a"
    assert main(["train", str(config), "-o", str(run_dir), "--json"]) == 0
    store = Store(tmp_path / "runs" / "nettle.db")
    (row,) = store.query()
    assert row["status"] == "done" and row["sweeps"] == ["tiny"]
    assert row["metrics"]["params"] > 0 and row["metrics"]["macs"] > row["metrics"]["params"]
    attack = ["attack", str(run_dir), "--attacks", "fgsm", "--limit", "30", "--json"]
    assert main([*attack, "--eps", "0.1"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = {p: p.read_bytes() for p in (run_dir / "eval").iterdir()}
    assert main([*attack, "--eps", "0.2"]) == 0
    assert all(p.read_bytes() == data for p, data in saved.items())  # nothing replaced
    assert main([*attack, "--eps", "0.1"]) == 0  # the same settings: read, not recomputed
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["cached"] is True and again["accuracy"] == first["accuracy"]
    robust = store.get(row["id"])["robustness"]
    assert [(r["attack"], r["eps"], r["examples"]) for r in robust] == [
        ("fgsm", 0.1, 30),
        ("fgsm", 0.2, 30),
    ]
    assert robust[0]["accuracy"] == first["accuracy"]["fgsm"]["0.1"]
    files = report_from_store(store, tmp_path / "report")
    assert files.records[0]["robustness"]["fgsm"] == {
        0.1: robust[0]["accuracy"],
        0.2: robust[1]["accuracy"],
    }
    cfg = load_config_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert collect_stages(run_dir, cfg).metrics()["params"] == row["metrics"]["params"]
