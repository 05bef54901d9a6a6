"""Unit-layer statistics (weak fraction, max) and `nettle inspect --activations [--against]`."""

import json

import pytest
import torch
from torch import nn

from nettle.cli import main
from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment
from nettle.inspect.unit_stats import compare_units, unit_layers, unit_stats
from nettle.nn.logic import ReLog


def test_weak_and_zero_fractions_by_hand():
    # ReLU of [0, 0.05, 0.5, 1, -1] = [0, 0.05, 0.5, 1, 0]: max 1; weak (0 < a < 0.1): 0.05
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    x = torch.tensor([[0.0, 0.05, 0.5, 1.0, -1.0]])
    [s] = unit_stats(net, x)
    assert (s.layer, s.unit) == ("1", "ReLU")
    assert s.weak_fraction == pytest.approx(1 / 5)
    assert s.zero_fraction == pytest.approx(2 / 5)
    assert s.max == 1.0 and s.mean == pytest.approx(1.55 / 5)
    # ReLog (log10(relu + 0.01) + 2) of the same: [0, 0.778, 1.708, 2.004, 0]; weak < 0.2004
    [r] = unit_stats(nn.Sequential(nn.Flatten(), ReLog()), x)
    assert r.weak_fraction == 0.0 and r.max == pytest.approx(2.0043, abs=1e-4)
    [w] = unit_stats(net, x, weak=0.6)  # 0.05 and 0.5 are under 0.6
    assert w.weak_fraction == pytest.approx(2 / 5)


def test_layers_pair_by_position():
    a = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU())
    b = nn.Sequential(nn.Linear(2, 2), ReLog())
    assert unit_layers(a) == ["1", "3"] and unit_layers(b) == ["1"]
    x = torch.randn(8, 2)
    pairs = compare_units(unit_stats(a, x), unit_stats(b, x))
    assert [(p.layer, q.unit if q else None) for p, q in pairs] == [("1", "ReLog"), ("3", None)]
    with pytest.raises(ValueError, match="no unit layers"):
        unit_stats(nn.Linear(2, 2), x)


def _run(tmp_path, name, units):
    cfg = load_config_dict(
        {
            "name": name,
            "model": {"kwargs": {"width": 4}, "units": units},
            "data": {"subset": 50},
            "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
            "evaluate": {"count": None},
        }
    )
    run_experiment(cfg, tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.slow
def test_inspect_activations_side_by_side(tmp_path, capsys):
    relu = _run(tmp_path, "relu", [])
    relog = _run(tmp_path, "relog", [{"unit": "relog", "last": 2}])
    args = ["inspect", relu, "--activations", "--against", relog, "--max-examples", "40"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == [relu, relog]
    units = [[s["unit"] for s in pair] for pair in out["layers"]]
    assert units == [["ReLU", "ReLU"], ["ReLU", "ReLog"], ["ReLU", "ReLog"]]
    assert all(0 <= s["weak_fraction"] <= 1 for pair in out["layers"] for s in pair)
    assert main(args) == 0
    assert "weak % A" in capsys.readouterr().out
    assert main(["inspect", relu]) == 2
    assert "-o/--out" in capsys.readouterr().err
    assert main(["inspect", relu, "--activations", "--weak", "0"]) == 2
