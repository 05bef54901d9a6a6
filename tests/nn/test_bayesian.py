"""Group normal-Jeffreys layers built from dense ones: counts, equivalence, shapes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.nn.bayesian import Conv2dGroupNJ, LinearGroupNJ

pytestmark = pytest.mark.usefixtures("one_thread")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_linear_parameter_count_by_hand():
    # weights 7x5 = 35 and 5 biases, each with a mean and a log-variance; 7 input groups
    # with z_mu and z_logvar: 2*35 + 2*5 + 2*7 = 94 = dense 40 + 35 + 5 + 14
    dense = nn.Linear(7, 5)
    assert _count(dense) == 40
    assert _count(LinearGroupNJ.from_dense(dense)) == 94
    assert _count(LinearGroupNJ.from_dense(nn.Linear(7, 5, bias=False))) == 2 * 35 + 2 * 7


def test_conv_parameter_count_by_hand():
    # 4 filters of 3x3x3 = 108 weights, 4 biases, 4 output-channel groups: 216 + 8 + 8
    dense = nn.Conv2d(3, 4, 3)
    assert _count(dense) == 112
    assert _count(Conv2dGroupNJ.from_dense(dense)) == 232
    # in 2, out 4, groups 2: 4 filters of 1x3x3 = 36 weights, no bias, 4 groups
    grouped = nn.Conv2d(2, 4, 3, groups=2, bias=False)
    assert _count(Conv2dGroupNJ.from_dense(grouped)) == 2 * 36 + 2 * 4


def test_from_dense_linear_keeps_the_function():
    torch.manual_seed(0)
    dense = nn.Linear(6, 3)
    layer = LinearGroupNJ.from_dense(dense).eval()
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), dense(x))
    torch.testing.assert_close(layer.weight_mu, dense.weight)
    assert torch.equal(layer.z_mu, torch.ones(6))
    layer.deterministic = True
    torch.testing.assert_close(layer(x), dense(x))


@pytest.mark.parametrize(
    "options",
    [
        {"stride": 2, "padding": 1},
        {"padding": "same", "dilation": 2},
        {"groups": 2, "padding": (1, 0), "bias": False},
    ],
)
def test_from_dense_conv_keeps_the_function(options):
    torch.manual_seed(0)
    dense = nn.Conv2d(4, 6, 3, **options)
    layer = Conv2dGroupNJ.from_dense(dense).eval()
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(layer(x), dense(x))
    layer.deterministic = True
    torch.testing.assert_close(layer(x), dense(x))


def test_training_forward_of_a_grouped_conv_has_the_mean_of_the_dense_one():
    torch.manual_seed(0)
    dense = nn.Conv2d(2, 4, 3, groups=2, padding=1)
    layer = Conv2dGroupNJ.from_dense(dense)
    x = torch.randn(1, 2, 5, 5).expand(4000, -1, -1, -1)
    mean = layer.train()(x).mean(0, keepdim=True)
    torch.testing.assert_close(mean, dense(x[:1]), atol=0.02, rtol=0.0)


def test_from_dense_refuses_other_padding_modes():
    with pytest.raises(ValueError, match="padding_mode 'reflect'"):
        Conv2dGroupNJ.from_dense(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


def test_from_dense_on_the_meta_device_builds_meta_parameters():
    with torch.device("meta"):
        layer = LinearGroupNJ.from_dense(nn.Linear(3, 2))
    assert layer.weight_logvar.device.type == "meta"
    assert F.linear(torch.zeros(1, 3, device="meta"), layer.weight_mu).shape == (1, 2)
