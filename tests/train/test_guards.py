import logging

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nettle.config import TrainConfig
from nettle.train.checkpoint import load_checkpoint
from nettle.train.guards import (
    NonFiniteLossError,
    clip_gradients,
    default_dtype_guard,
    grad_norm,
)
from nettle.train.loop import Trainer


class BlowUp(nn.Module):
    """Linear model whose output becomes NaN from the 3rd forward pass in training."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        y = self.fc(x)
        return y * float("nan") if self.calls >= 3 else y


def test_nonfinite_loss_stops_and_saves_snapshot(tmp_path):
    data = TensorDataset(torch.rand(32, 4), torch.randint(0, 2, (32,)))
    cfg = TrainConfig(epochs=2, device="cpu", tensorboard=False)
    trainer = Trainer(BlowUp(), data, None, cfg, batch_size=8, run_dir=tmp_path)
    with pytest.raises(
        NonFiniteLossError, match="loss became nan at step 2; debug snapshot"
    ) as info:
        trainer.fit()
    snap = load_checkpoint(info.value.snapshot)
    assert snap["step"] == 2 and snap["batch"]["x"].shape == (8, 4)
    assert info.value.snapshot.endswith("nonfinite-step2.pt")


class _InfBackward(torch.autograd.Function):
    """Identity whose gradient is infinite (the loss stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("clip", [None, 10.0])
def test_nonfinite_gradient_stops_before_the_update(tmp_path, clip):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += self.training
            w = _InfBackward.apply(self.fc.weight) if self.calls >= 2 else self.fc.weight
            return x @ w.t() + self.fc.bias

    data = TensorDataset(torch.rand(32, 4), torch.randint(0, 2, (32,)))
    cfg = TrainConfig(
        epochs=1, device="cpu", tensorboard=False, nan_guard_grads=True, grad_clip=clip
    )
    after_first = {}

    def progress(event, info):
        if event == "step" and info["step"] == 1:
            after_first.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer = Trainer(Model(), data, None, cfg, batch_size=8, run_dir=tmp_path, progress=progress)
    with pytest.raises(NonFiniteLossError, match="grad norm became inf at step 1; debug") as info:
        trainer.fit()
    snap = load_checkpoint(info.value.snapshot)
    assert snap["step"] == 1 and snap["grad_norm"] == float("inf")
    # the weights are those after step 0: the offending step did not update them
    for name, value in after_first.items():
        assert torch.equal(snap["model"][name], value), name
    assert torch.equal(trainer.model.fc.weight.detach(), after_first["fc.weight"])


def test_grad_norm_is_the_global_l2_norm():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert grad_norm([a, b, nn.Parameter(torch.zeros(1))]) == 5.0


def test_clip_by_norm_and_value():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_gradients([p], 1.0, "norm") == pytest.approx(5.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([3.0, -4.0, 0.5])
    clip_gradients([p], 1.0, "value")
    assert p.grad.tolist() == [1.0, -1.0, 0.5]
    with pytest.raises(ValueError, match="'norm' or 'value'"):
        clip_gradients([p], 1.0, "both")


def test_trainer_clips(tmp_path):
    data = TensorDataset(torch.rand(16, 4) * 100, torch.randint(0, 2, (16,)))
    cfg = TrainConfig(
        epochs=1,
        device="cpu",
        grad_clip=1e-3,
        tensorboard=False,
        optim={"name": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0},
    )
    model = nn.Linear(4, 2)
    before = [q.detach().clone() for q in model.parameters()]
    Trainer(model, data, None, cfg, batch_size=16).fit()
    moved = torch.cat([(q.detach() - b).flatten() for q, b in zip(model.parameters(), before)])
    assert moved.norm().item() <= 1e-3 * 1.0001  # one step of lr 1 with the gradient clipped


def test_default_dtype_guard_restores(caplog):
    with caplog.at_level(logging.WARNING), default_dtype_guard():
        torch.set_default_dtype(torch.float64)
    assert torch.get_default_dtype() == torch.float32
    assert "restoring torch.float32" in caplog.text
