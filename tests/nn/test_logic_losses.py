"""The logic regularisers and sigmoid losses on hand-computed tiny tensors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.config import TrainConfig
from nettle.measure.timing import PhaseTimer
from nettle.models.units import add_sigmoid_output
from nettle.nn.logic import QuadraticLinear, SphericalLinear
from nettle.nn.logic_losses import (
    REGULARIZERS,
    logic_regularizer,
    sigmoid_mse_loss,
    strictening_penalty,
)
from nettle.train.logic_objective import LogicObjective


def _tiny() -> nn.Module:
    # W1 = [[1, -2], [3, -4]], b1 = [1, -3]; W2 = [[-1, 2]], b2 = [-2]
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        net[0].bias.copy_(torch.tensor([1.0, -3.0]))
        net[1].weight.copy_(torch.tensor([[-1.0, 2.0]]))
        net[1].bias.copy_(torch.tensor([-2.0]))
    return net


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # per layer: mean|W| 2.5 + 1.5, mean b -1 + -2
        ("strictening_l1", 4.0 - 3.0),
        # per layer: mean W^2 7.5 + 2.5, mean b|b| (1 - 9)/2 + (-4)
        ("strictening_l2", 10.0 - 8.0),
        # over all: |w| 13/6, b (1 - 3 - 2)/3
        ("max_fit_l1", 13 / 6 - 4 / 3),
        # over all: w^2 35/6, b|b| (1 - 9 - 4)/3
        ("max_fit_l2", 35 / 6 - 4.0),
        ("max_margin_l1", 13 / 6),
        ("max_margin_l2", 35 / 6),
    ],
)
def test_regularisers_by_hand(kind, expected):
    assert logic_regularizer(_tiny(), kind).item() == pytest.approx(expected)


def test_every_regulariser_is_tested_and_strictening_l1_is_the_old_penalty():
    assert len(REGULARIZERS) == 6
    net = _tiny()
    assert logic_regularizer(net, "strictening_l1").item() == pytest.approx(
        strictening_penalty(net).item()
    )
    with pytest.raises(ValueError, match="known: strictening_l1"):
        logic_regularizer(net, "max_fit")


def test_quadratic_weights_count_as_weights():
    q = QuadraticLinear(2, 1, bias=False)
    with torch.no_grad():
        q.weight.copy_(torch.tensor([[1.0, -3.0]]))
        q.q.copy_(torch.tensor([[2.0, 0.0]]))
    # max-margin L1 over [1, -3, 2, 0]: 6/4; strictening L1: mean 2 + mean 1
    assert logic_regularizer(q, "max_margin_l1").item() == pytest.approx(1.5)
    assert logic_regularizer(q, "strictening_l1").item() == pytest.approx(3.0)
    s = SphericalLinear(3, 2)
    assert s.q.shape == (2, 1)


def test_sigmoid_mse_on_probabilities_by_hand():
    p = torch.tensor([[0.5, 1.0]])
    # target class 0 -> [1, 0]; weights 9 and 1: (0.25 * 9 + 1 * 1) / 2
    assert sigmoid_mse_loss(p, torch.tensor([0]), probabilities=True).item() == 1.625
    z = torch.tensor([[0.0, 2.0]])
    same = sigmoid_mse_loss(torch.sigmoid(z), torch.tensor([1]), probabilities=True)
    assert same.item() == pytest.approx(sigmoid_mse_loss(z, torch.tensor([1])).item())


@pytest.mark.parametrize("loss", ["sigmoid_mse", "bce"])
def test_a_sigmoid_output_model_gets_the_same_loss(loss):
    torch.manual_seed(0)
    logits_net = nn.Linear(3, 4)
    probs_net = add_sigmoid_output(nn.Linear(3, 4))
    probs_net.load_state_dict(logits_net.state_dict())
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    cfg = TrainConfig(loss=loss)
    a = LogicObjective(cfg)(logits_net, x, y, PhaseTimer())
    b = LogicObjective(cfg, probabilities=True)(probs_net, x, y, PhaseTimer())
    assert b.loss.item() == pytest.approx(a.loss.item(), rel=1e-5)
    if loss == "bce":
        expected = F.binary_cross_entropy_with_logits(logits_net(x), F.one_hot(y, 4).float())
        assert a.loss.item() == pytest.approx(expected.item())


def test_objective_adds_the_weighted_regulariser():
    net = _tiny()
    x, y = torch.ones(2, 2), torch.tensor([0, 0])
    cfg = TrainConfig(regularizer="max_fit_l2", regularizer_weight=0.5)
    out = LogicObjective(cfg)(net, x, y, PhaseTimer())
    task = F.cross_entropy(net(x), y)
    assert out.parts["max_fit_l2"].item() == pytest.approx(35 / 6 - 4.0)
    assert out.loss.item() == pytest.approx(task.item() + 0.5 * (35 / 6 - 4.0))
    with pytest.raises(ValueError, match="sigmoid output needs"):
        LogicObjective(TrainConfig(), probabilities=True)
