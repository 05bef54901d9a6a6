import math

import pytest
import torch
from torch import nn

from nettle.nn.logic import (
    EllipticalConv2d,
    EllipticalLinear,
    Maxout,
    MinMaxOut,
    QuadraticConv2d,
    QuadraticExpansion,
    QuadraticLinear,
    ReLog,
    ReLog1p,
    folding_factor,
    maxout,
)
from nettle.nn.logic_losses import sigmoid_mse_loss, strictening_penalty, to_multi_hot


def test_relog_values():
    f = ReLog()  # log10(relu(x) + 0.01) + 2
    x = torch.tensor([-5.0, 0.0, 0.99, 9.99])
    torch.testing.assert_close(f(x), torch.tensor([0.0, 0.0, 2.0, 3.0]))
    g = ReLog(base=100, eps=0.01, offset=1)
    assert g(torch.tensor([0.0])).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="base > 1"):
        ReLog(base=1.0)


def test_relog1p_starts_as_relu_and_anneals():
    f = ReLog1p(beta=2.0, step=0.25)
    x = torch.tensor([-1.0, 0.5, 3.0])
    torch.testing.assert_close(f.eval()(x), torch.relu(x), rtol=1e-3, atol=1e-4)
    f.train()
    for _ in range(6):  # clamps at strength 1
        f(x)
    assert f.strength.item() == 1.0
    torch.testing.assert_close(f.eval()(x), torch.log1p(2 * torch.relu(x)) / 2)
    assert "strength" in f.state_dict()


def test_maxout_and_minmaxout_by_hand():
    x = torch.tensor([[1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 7.0, 6.0]])
    torch.testing.assert_close(maxout(x, 2), torch.tensor([[5.0, 2.0, 4.0, 7.0]]))
    torch.testing.assert_close(Maxout(4, "min")(x), torch.tensor([[0.0, 3.0]]))
    # max over pairs [5, 2, 4, 7], then min over pairs -> [2, 4]
    torch.testing.assert_close(MinMaxOut(2, 2)(x), torch.tensor([[2.0, 4.0]]))
    fm = torch.randn(2, 16, 3, 3)
    assert MinMaxOut()(fm).shape == (2, 2, 3, 3)
    assert folding_factor("minmax") == 8 and folding_factor("") == 1
    with pytest.raises(ValueError, match="do not fold"):
        maxout(torch.ones(1, 5), 2)


def test_quadratic_starts_linear_and_adds_q_x_squared():
    torch.manual_seed(0)
    q = QuadraticLinear(3, 2)
    x = torch.randn(4, 3)
    torch.testing.assert_close(q(x), nn.functional.linear(x, q.weight, q.bias))
    with torch.no_grad():
        q.q.fill_(-0.5)
    expected = nn.functional.linear(x, q.weight, q.bias) - 0.5 * x.pow(2).sum(1, keepdim=True)
    torch.testing.assert_close(q(x), expected)
    conv = QuadraticConv2d(2, 3, 3, padding=1)
    img = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(conv(img), conv._conv_forward(img, conv.weight, conv.bias))


def test_elliptical_anneals_curvature_and_fires_inside():
    unit = EllipticalLinear(2, 1, spherical=True, step=0.5)
    with torch.no_grad():
        unit.weight.zero_()
        unit.bias.zero_()
        unit.q.fill_(-1.0)  # |Q| = 1: y = a * (1 - |x|^2)
    x = torch.tensor([[0.0, 0.0], [0.6, 0.0], [2.0, 0.0]])
    assert torch.all(unit.eval()(x) == 0)  # curvature 0 at the start
    unit.train()(x)
    unit(x)
    assert unit.curvature.item() == 1.0
    torch.testing.assert_close(unit.eval()(x), torch.tensor([[1.0], [0.64], [-3.0]]))
    conv = EllipticalConv2d(1, 2, 3, padding=1, spherical=True)
    assert conv(torch.randn(1, 1, 4, 4)).shape == (1, 2, 4, 4)


def test_quadratic_expansion():
    x = torch.tensor([[[[2.0]]]])
    torch.testing.assert_close(QuadraticExpansion()(x), torch.tensor([[[[2.0]], [[4.0]]]]))


def test_sigmoid_mse_by_hand_and_negatives():
    logits = torch.zeros(1, 2)  # sigmoid = 0.5 everywhere
    # target class 0: (9 * 0.25 + 1 * 0.25) / 2 elements
    assert sigmoid_mse_loss(logits, torch.tensor([0])).item() == pytest.approx(2.5 / 2)
    # a negative (-1): all-zero target, both errors weighted 1
    assert sigmoid_mse_loss(logits, torch.tensor([-1])).item() == pytest.approx(0.25)
    torch.testing.assert_close(
        to_multi_hot(torch.tensor([1, -1]), 3), torch.tensor([[0.0, 1, 0], [0, 0, 0]])
    )


def test_strictening_penalty_by_hand():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -3.0], [0.0, 2.0]]))
        lin.bias.copy_(torch.tensor([-1.0, -3.0]))
    model = nn.Sequential(lin, nn.ReLU())
    # mean|W| = 1.5, mean(b) = -2 -> -0.5
    assert strictening_penalty(model).item() == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="at least one Linear or Conv"):
        strictening_penalty(nn.ReLU())
    assert math.isfinite(strictening_penalty(nn.Conv2d(1, 1, 3)).item())
