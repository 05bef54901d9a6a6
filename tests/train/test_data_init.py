"""Data-dependent (LSUV) initialisation: unit output variance on the batch it measured."""

import pytest
import torch
from torch import nn

from nettle.config import ConfigError, load_config_dict
from nettle.train.data_init import data_init, example_batch


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )


def test_every_layer_has_unit_variance_on_the_batch():
    net = _net().train()
    x = torch.rand(64, 1, 8, 8) * 7 + 3
    report = data_init(net, x, batch_size=64, tol=0.02)
    assert list(report.layers) == ["0", "3", "6"] and report.converged
    outputs = {}
    hooks = [
        net[i].register_forward_hook(lambda m, i, o, k=i: outputs.setdefault(k, o))
        for i in (0, 3, 6)
    ]
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    for i in (0, 3, 6):
        assert float(outputs[i].var()) == pytest.approx(1.0, abs=0.02)


def test_only_weights_are_scaled_and_modes_and_bn_statistics_are_kept():
    net, ref = _net().train(), _net()
    x = torch.rand(32, 1, 8, 8) * 4
    report = data_init(net, x, batch_size=32)
    assert net.training and net[1].training
    assert torch.equal(net[1].running_mean, ref[1].running_mean)
    assert torch.equal(net[0].bias, ref[0].bias)
    scale = report.layers["0"]["scale"]
    torch.testing.assert_close(net[0].weight, ref[0].weight * scale)
    assert report.layers["0"]["passes"] >= 2  # measured, scaled, measured again


def test_example_batch_is_seeded_and_capped():
    data = [(torch.full((1,), float(i)), 0) for i in range(10)]
    a, b = example_batch(data, 4, seed=1), example_batch(data, 4, seed=1)
    assert torch.equal(a, b) and a.shape == (4, 1)
    assert len(set(a.flatten().tolist())) == 4
    assert example_batch(data, 50).shape == (10, 1)


def test_config_fields():
    cfg = load_config_dict({"model": {"init": "data", "init_batch": 32}})
    assert cfg.model.init == "data" and cfg.model.init_tol == 0.05
    with pytest.raises(ConfigError, match="model.init"):
        load_config_dict({"model": {"init": "lsuv"}})
