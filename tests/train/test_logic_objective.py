import pytest
import torch
from torch import nn

from nettle.config import ConfigError, TrainConfig, load_config_dict
from nettle.experiment.run import run_experiment
from nettle.measure.timing import PhaseTimer
from nettle.models.build import build_model
from nettle.nn.logic import MinMaxOut, ReLog1p
from nettle.train.logic_objective import LogicObjective


def test_logic_model_from_config_trains(tmp_path):
    cfg = load_config_dict(
        {
            "name": "logic",
            "model": {
                "name": "simple-cnn",
                "activation": "relog1p",
                "maxout": "minmax",
                "kwargs": {"width": 8},
            },
            "train": {
                "epochs": 3,
                "device": "cpu",
                "tensorboard": False,
                "loss": "sigmoid_mse",
                "strictening": 1e-3,
                "negatives": "scramble",
                "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0},
            },
        }
    )
    model = build_model(cfg)
    types = {type(m) for m in model.modules()}
    assert MinMaxOut in types and nn.ReLU not in types
    assert model.net.stem[0].out_channels == 8 * 8  # widened by the folding factor
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["best_test_acc"] > 0.8


def test_relog_swaps_every_relu():
    cfg = load_config_dict({"model": {"name": "wrn-10-1", "activation": "relog1p"}})
    model = build_model(cfg)
    assert sum(isinstance(m, ReLog1p) for m in model.modules()) == 7
    assert not any(type(m) is nn.ReLU for m in model.modules())


def test_negatives_get_zero_targets_and_accuracy_uses_real_examples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    obj = LogicObjective(TrainConfig(loss="bce", negatives="overlay", negatives_fraction=0.5))
    x, y = torch.rand(8, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    out = obj(model, x, y, PhaseTimer())
    assert out.logits.shape == (8, 3)
    assert set(out.parts) == {"task"}


def test_bad_combinations():
    with pytest.raises(ValueError, match="needs train.loss sigmoid_mse or bce"):
        LogicObjective(TrainConfig(negatives="scramble"))
    with pytest.raises(ConfigError, match="model.maxout"):
        load_config_dict({"model": {"maxout": "median"}})
    with pytest.raises(ValueError, match="takes no argument 'maxout'"):
        build_model(load_config_dict({"model": {"name": "wrn-10-1", "maxout": "max"}}))
