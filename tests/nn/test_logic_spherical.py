"""Spherical units by hand: one learned curvature per output unit."""

import torch

from nettle.nn.logic import SphericalConv2d, SphericalLinear


def test_spherical_linear_by_hand():
    s = SphericalLinear(2, 1, step=0.5)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([[1.0, 0.0]]))
        s.bias.zero_()
        s.q.fill_(-0.5)  # used as |q|
    x = torch.tensor([[1.0, 2.0]])
    # curvature a starts at 0: a linear unit
    assert s.eval()(x).item() == 1.0
    s.train()(x)  # one training pass anneals a by 0.5
    s.train()(x)  # and another to 1
    assert s.curvature.item() == 1.0
    # 1 - 1 * 0.5 * (1 + 4) + 1 * gamma (1) = -0.5
    assert s.eval()(x).item() == -0.5
    assert sum(p.numel() for p in s.parameters()) == 2 + 1 + 1


def test_spherical_conv_sums_x_squared_over_the_window():
    s = SphericalConv2d(1, 2, 3, padding=0, step=1.0)
    with torch.no_grad():
        s.weight.zero_()
        s.bias.zero_()
        s.q.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        s.curvature.fill_(1.0)
    x = torch.full((1, 1, 3, 3), 2.0)
    # 9 pixels of x^2 = 4: 1 - q * 36
    torch.testing.assert_close(s.eval()(x).flatten(), torch.tensor([1 - 36.0, 1 - 72.0]))
    assert s.q.numel() == 2
