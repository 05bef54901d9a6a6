import subprocess
import sys

import pytest

from nettle.config import ConfigError
from nettle.experiment.spec import plan_sweep

SPEC = """
name: digits-lr
base: {model: {name: simple-cnn}, train: {epochs: 3}}
grid: {train.optim.lr: [0.01, 0.05], train.seed: [0, 1]}
zip: {train.epochs: [2, 4], data.batch_size: [32, 64]}
list: [{model.conv: Sep}, {model.conv: null}]
exclude: [{train.optim.lr: 0.01, train.seed: 1}]
include: [{train.optim.lr: 0.2}]
"""


def _write(tmp_path, text=SPEC):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_expansion_counts_and_pairing(tmp_path):
    plan = plan_sweep(_write(tmp_path))
    # grid 2x2 = 4, minus 1 excluded = 3 grid cells; x zip 2 x list 2 = 12; + 1 included
    assert len(plan.runs) == 3 * 2 * 2 + 1
    pairs = {(r.config.train.epochs, r.config.data.batch_size) for r in plan.runs[:-1]}
    assert pairs == {(2, 32), (4, 64)}  # zipped, never crossed
    assert not any(r.config.train.optim.lr == 0.01 and r.config.train.seed == 1 for r in plan.runs)
    last = plan.runs[-1]
    assert last.config.train.optim.lr == 0.2 and last.config.train.epochs == 3
    assert len({r.id for r in plan.runs}) == len(plan.runs)
    assert plan.runs[0].name.startswith("train.optim.lr=0.01,train.seed=0")


def test_ids_are_stable_across_processes(tmp_path):
    path = _write(tmp_path)
    here = [r.id for r in plan_sweep(path).runs]
    code = f"from nettle.experiment.spec import plan_sweep; print(' '.join(r.id for r in plan_sweep({str(path)!r}).runs))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert there.stdout.split() == here


def test_duplicates_collapse():
    plan = plan_sweep({"grid": {"train.seed": [1, 1, 2]}})
    assert [r.config.train.seed for r in plan.runs] == [1, 2]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"run \[train.epohcs=3\]: train.epohcs: unknown key"):
        plan_sweep({"grid": {"train.epohcs": [3]}})
    with pytest.raises(ConfigError, match="zip lists differ in length"):
        plan_sweep({"zip": {"train.seed": [1, 2], "train.epochs": [1]}})
    with pytest.raises(ConfigError, match="unknown key 'grdi'"):
        plan_sweep({"grdi": {}})
    with pytest.raises(ConfigError, match="no such sweep file"):
        plan_sweep(tmp_path / "missing.yaml")


def test_exclude_matches_resolved_values_and_names_bad_keys():
    spec = {
        "base": {"train": {"epochs": 2}},
        "grid": {"train.seed": [0, 1], "model.conv": [None, "Sep"]},
        "exclude": [{"train.epochs": 2, "model.conv": "Sep"}],  # epochs comes from the base
    }
    plan = plan_sweep(spec)
    assert [(r.config.train.seed, r.config.model.conv) for r in plan.runs] == [(0, None), (1, None)]
    assert [r.name for r in plan.runs] == [
        "train.seed=0,model.conv=null",
        "train.seed=1,model.conv=null",
    ]
    with pytest.raises(ConfigError, match="exclude: 'train.sed' is not a field of any run"):
        plan_sweep({"grid": {"train.seed": [0]}, "exclude": [{"train.sed": 0}]})
    with pytest.raises(ConfigError, match="include must be a list of mappings"):
        plan_sweep({"include": {"train.seed": 3}})
    with pytest.raises(
        ConfigError, match=r"run \[data.batch_size=0\]: data.batch_size: Input should be greater"
    ):
        plan_sweep({"list": [{"data.batch_size": 0}]})
