"""Hyper-parameter search: Optuna trials as ordinary runs of the store, run by run_sweep."""

import json
import math
import sys

import pytest

from nettle.config import ConfigError
from nettle.experiment.search import parse_space, run_search, study_path_of
from nettle.experiment.store import Store

pytest.importorskip("optuna")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

# A stand-in for `nettle train`: test_acc peaks at lr = 0.01; seed 13 fails.
JOB = r"""
import json, math, sys
from pathlib import Path
import yaml
cfg = yaml.safe_load(Path(sys.argv[1]).read_text())
if cfg["train"]["seed"] == 13:
    raise ValueError("unlucky seed")
lr = cfg["train"]["optim"]["lr"]
acc = 0.9 - 0.05 * (math.log10(lr) + 2) ** 2 + cfg["train"]["seed"] / 1000
summary = {"status": "done", "final": {"test_acc": acc}}
(Path(sys.argv[2]) / "summary.json").write_text(json.dumps(summary))
"""

SPEC = {
    "name": "lr-search",
    "base": {"train": {"epochs": 1}, "evaluate": {"count": None}},
    "search": {"space": {"train.optim.lr": {"low": 1.0e-4, "high": 1.0, "log": True}}},
}


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return lambda config, run_dir: [sys.executable, str(path), str(config), str(run_dir)]


def _expected(lr, seed=0):
    return 0.9 - 0.05 * (math.log10(lr) + 2) ** 2 + seed / 1000


def test_search_records_every_trial_and_continues_the_study(tmp_path, job):
    store = Store(tmp_path / "nettle.db")
    first = run_search(SPEC, 4, store, root=tmp_path, slots=2, command=job, seed=1)
    assert [t.state for t in first.trials] == ["complete"] * 4 and first.total_trials == 4
    rows = store.query(sweep="lr-search")
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    by_id = {r["id"]: r for r in rows}
    for t in first.trials:
        row = by_id[t.run_id]
        assert row["config"]["train"]["optim"]["lr"] == t.params["train.optim.lr"]
        assert t.value == pytest.approx(_expected(t.params["train.optim.lr"]))
        assert row["metrics"]["test_acc"] == t.value and row["name"].startswith("trial ")
    assert first.best.value == max(r["metrics"]["test_acc"] for r in rows)
    assert first.best_run_dir == str(tmp_path / "lr-search" / first.best.run_id)
    assert study_path_of(store.path).is_file()

    second = run_search(SPEC, 2, store, root=tmp_path, slots=2, command=job, seed=1)
    assert second.total_trials == 6 and [t.number for t in second.trials] == [4, 5]
    rows = store.query(sweep="lr-search")
    assert len(rows) == 6 and all(r["attempts"] == 1 for r in rows)  # nothing ran twice
    assert second.best.value == max(r["metrics"]["test_acc"] for r in rows)
    assert second.best.value >= first.best.value


def test_done_configs_reuse_stored_results_and_failures_are_failed_trials(tmp_path, job):
    spec = {"name": "seeds", "base": {"evaluate": {"count": None}}}
    spec["search"] = {"space": {"train.seed": [0, 13]}}
    store = Store(tmp_path / "nettle.db")
    result = run_search(spec, 6, store, root=tmp_path, command=job, retries=0, sampler="random")
    by_seed = {}
    for t in result.trials:
        by_seed.setdefault(t.params["train.seed"], []).append(t)
    assert set(by_seed) == {0, 13}
    assert all(t.state == "fail" and "unlucky seed" in t.reason for t in by_seed[13])
    ok = by_seed[0]
    assert all(t.state == "complete" and t.value == pytest.approx(_expected(0.05)) for t in ok)
    assert [t.reused for t in ok] == [False] + [True] * (len(ok) - 1)
    assert store.get(ok[0].run_id)["attempts"] == 1
    assert result.best.params == {"train.seed": 0}


def test_space_errors_name_the_key(tmp_path):
    def space(entry):
        return {"train.optim.lr": entry}

    with pytest.raises(
        ConfigError, match=r"search.space.train.optim.lr: low must be a number.*1.0e-3"
    ):
        parse_space(space({"low": "1e-3", "high": 0.1}))
    with pytest.raises(ConfigError, match=r"train.optim.lr: need low <= high"):
        parse_space(space({"low": 0.0, "high": 0.1, "log": True}))
    with pytest.raises(ConfigError, match=r"train.optim.lr: unknown key 'hi'"):
        parse_space(space({"low": 0.1, "hi": 0.2}))
    with pytest.raises(ConfigError, match=r"search.space.train.optim.lr.*greater than 0"):
        parse_space(space({"low": 0.0, "high": 0.1}))
    with pytest.raises(ConfigError, match=r"search.space.train.bogus.*unknown key"):
        parse_space({"train.bogus": [1, 2]})
    dists = parse_space({"train.epochs": {"low": 1, "high": 4}})
    assert type(dists["train.epochs"]).__name__ == "IntDistribution"
    with pytest.raises(ConfigError, match="grid does not apply to a search"):
        run_search(SPEC | {"grid": {"train.seed": [0, 1]}}, 1, tmp_path / "n.db", root=tmp_path)
    store = tmp_path / "nettle.db"
    run_search(SPEC, 0, store, root=tmp_path)
    with pytest.raises(ValueError, match=r"optimises test_acc \(maximize\), not loss \(maximize\)"):
        run_search(SPEC, 0, store, root=tmp_path, metric="loss")


def test_cli_search_prints_the_best_trial(tmp_path, capsys, monkeypatch, job):
    from nettle.cli import main
    from nettle.experiment import schedule

    monkeypatch.setattr(schedule, "default_command", job)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\nbase: {evaluate: {count: null}}\nsearch:\n  space:\n"
        "    train.optim.lr: {low: 1.0e-3, high: 0.1, log: true}\n"
    )
    root = tmp_path / "runs"
    argv = ["sweep", "search", str(spec), "--trials", "2", "--root", str(root), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_trials"] == 2 and out["best"]["value"] == max(
        t["value"] for t in out["trials"]
    )
    assert main(["runs", "--store", str(root / "nettle.db"), "--sweep", "s", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "best: trial" in text and "study s: 4 trials" in text


@pytest.mark.slow
def test_real_digits_search_trains_each_trial(tmp_path):
    base = {
        "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
        "data": {"name": "digits", "batch_size": 64},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
    }
    space = {"train.optim.lr": {"low": 1.0e-3, "high": 0.3, "log": True}}
    spec = {"name": "real-search", "base": base, "search": {"space": space}}
    store = Store(tmp_path / "nettle.db")
    result = run_search(spec, 2, store, root=tmp_path, slots=2)
    rows = store.query(sweep="real-search", status="done")
    assert len(rows) == 2 and [t.state for t in result.trials] == ["complete"] * 2
    assert result.best.value == max(r["metrics"]["test_acc"] for r in rows)
    summary = json.loads(
        (tmp_path / "real-search" / result.best.run_id / "summary.json").read_text()
    )
    assert summary["final"]["test_acc"] == result.best.value
