import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nettle.config import AdversarialConfig, TrainConfig
from nettle.measure.timing import PhaseTimer
from nettle.train.adversarial import create_adversarial
from nettle.train.loop import Trainer


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )


@pytest.mark.parametrize("mode", ["madry", "fast"])
def test_examples_stay_in_the_ball_and_bn_is_untouched(mode):
    model = _model().train()
    obj = create_adversarial(AdversarialConfig(mode=mode, eps=0.1, steps=3))
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,))
    captured = {}
    real = obj._train_on

    def spy(m, adv, yy, timer):
        captured["adv"] = adv
        return real(m, adv, yy, timer)

    obj._train_on = spy
    stats = model[1].running_mean.clone()
    timer = PhaseTimer()
    obj(model, x, y, timer)
    adv = captured["adv"]
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert model.training
    assert "attack" in timer.totals()
    if mode == "madry":  # generation runs in eval mode: only the training forward moves BN
        moved = model[1].running_mean.clone()
        model2 = _model().train()
        model2[1].running_mean.copy_(stats)
        model2(adv)
        torch.testing.assert_close(moved, model2[1].running_mean)


def test_free_training_replays_and_carries_the_perturbation():
    data = TensorDataset(torch.rand(32, 1, 6, 6), torch.randint(0, 3, (32,)))
    obj = create_adversarial(AdversarialConfig(mode="free", eps=0.1, replays=3))
    cfg = TrainConfig(epochs=1, device="cpu", tensorboard=False)
    trainer = Trainer(_model(), data, None, cfg, batch_size=16, objective=obj)
    summary = trainer.fit()
    assert summary["steps"] == 2 * 3  # two batches, three replays each
    assert obj.delta is not None and obj.delta.abs().max() <= 0.1 + 1e-6
    assert obj.delta.abs().max() > 0  # the memory moved
    assert "attack" in summary["phases"]
