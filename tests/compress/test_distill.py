import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.compress.distill import FeatureTap, at_loss, attention_map, kd_loss


def test_attention_map_by_hand():
    x = torch.zeros(1, 2, 1, 2)
    x[0, 0, 0, 0] = 2.0  # channel-mean of squares: [(4 + 0) / 2, 0] = [2, 0]
    x[0, 1, 0, 1] = 2.0  # -> [2, 2] -> normalised [1/sqrt2, 1/sqrt2]
    torch.testing.assert_close(attention_map(x), torch.full((1, 2), 1 / math.sqrt(2)))


def test_at_loss_zero_for_equal_and_scaled_inputs():
    s = [torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)]
    assert at_loss(s, s).item() == 0.0
    # maps are normalised per example: a positive scale of the teacher changes nothing
    assert at_loss(s, [2 * t for t in s]).item() == pytest.approx(0.0, abs=1e-9)


def test_at_loss_weighting_by_number_of_maps():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4, 4) for _ in range(2)]
    t = [torch.randn(2, 5, 4, 4) for _ in range(2)]
    per_map = [(attention_map(a) - attention_map(b)).pow(2).mean() for a, b in zip(s, t)]
    # two maps: each weighted 3 * beta / 2
    expected = 1.5 * 1000 * (per_map[0] + per_map[1])
    torch.testing.assert_close(at_loss(s, t, beta=1e3), expected)


def test_at_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 student maps but 1 teacher maps"):
        at_loss([torch.ones(1, 1, 2, 2)] * 2, [torch.ones(1, 1, 2, 2)])
    with pytest.raises(ValueError, match=r"map 0: student size \(2, 2\) != teacher size \(4, 4\)"):
        at_loss([torch.ones(1, 1, 2, 2)], [torch.ones(1, 1, 4, 4)])


def test_kd_loss_is_ce_when_alpha_zero_and_kl_zero_for_equal_logits():
    torch.manual_seed(0)
    s, y = torch.randn(5, 4), torch.randint(0, 4, (5,))
    torch.testing.assert_close(kd_loss(s, s.clone(), y, alpha=0.0), F.cross_entropy(s, y))
    assert kd_loss(s, s.clone(), y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-5)


def test_kd_loss_by_hand():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> [0.75, 0.25] at T = 1
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = kd_loss(s, t, torch.tensor([0]), alpha=1.0, temperature=1.0)
    assert got.item() == pytest.approx(2.0 * kl, rel=1e-6)


def test_feature_tap_records_and_removes():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1))
    with FeatureTap(net, ["2", "0"], detach=True) as tap:
        out = net(torch.ones(1, 1, 4, 4))
        torch.testing.assert_close(tap.outputs[0], out)
        assert tap.outputs[1].shape == (1, 2, 2, 2)
        assert not tap.outputs[0].requires_grad
    assert not net[0]._forward_hooks and not net[2]._forward_hooks
    with pytest.raises(ValueError, match="no submodule named 'nope'"):
        FeatureTap(net, ["nope"])
