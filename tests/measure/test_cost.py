import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure import OpCount, count, format_cost, list_conventions, register_formula
from nettle.models import create_model
from nettle.registry import UnknownNameError


def _row(report, name):
    return next(r for r in report.modules if r.name == name)


def test_conv_with_groups_dilation_stride_by_hand():
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4, bias=True)
    r = count(nn.Sequential(conv), (8, 15, 15))
    # output 8x8; each output: 12 channels x (8/4) inputs x 9 taps
    assert r.macs == 8 * 8 * 12 * 2 * 9
    assert r.params == 12 * 2 * 9 + 12
    plus = count(nn.Sequential(conv), (8, 15, 15), "macs+elementwise")
    assert plus.macs == r.macs + 12 * 64  # + bias adds


def test_conv1d_conv3d_and_transposed():
    assert count(nn.Conv1d(4, 6, 5), (4, 20)).macs == 16 * 6 * 4 * 5
    assert count(nn.Conv3d(2, 3, 3, padding=1), (2, 4, 4, 4)).macs == 64 * 3 * 2 * 27
    # transposed: input positions x Cin x Cout x k (not output positions)
    up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
    assert count(up, (16, 8, 8)).macs == 64 * 16 * 8 * 16


def test_linear_over_extra_dims():
    assert count(nn.Linear(10, 4), (7, 10)).macs == 7 * 10 * 4


def test_lstm_bidirectional_two_layers_by_hand():
    lstm = nn.LSTM(input_size=5, hidden_size=7, num_layers=2, bidirectional=True)
    t, n = 6, 3
    r = count(lstm, [torch.rand(t, n, 5)], batch_size=n)
    layer1 = 4 * 7 * (5 + 7)
    layer2 = 4 * 7 * (2 * 7 + 7)
    assert r.macs == 2 * (layer1 + layer2) * t  # per example
    batch_first = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    assert count(batch_first, (t, 5)).macs == 2 * (layer1 + layer2) * t
    assert r.unsupported == []  # CPU LSTM kernel is covered by the formula


def test_gru_rnn_and_cells():
    assert count(nn.GRU(4, 3), [torch.rand(5, 1, 4)]).macs == 3 * 3 * (4 + 3) * 5
    assert count(nn.RNN(4, 3), [torch.rand(5, 1, 4)]).macs == 3 * (4 + 3) * 5
    assert count(nn.LSTMCell(4, 3), (4,)).macs == 4 * 3 * (4 + 3)


def test_multihead_attention_by_hand():
    mha = nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True)

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    length = 5
    r = count(Self(), (length, 8))
    proj = 3 * length * 8 * 8
    products = 2 * length * length * 8
    out = length * 8 * 8
    assert r.macs == proj + products + out
    assert r.unsupported == []


def test_functional_ops_in_unknown_modules_are_counted():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
            self.m = nn.Parameter(torch.randn(6 * 4 * 4, 5))

        def forward(self, x):
            y = F.conv2d(x, self.w)  # (N, 6, 4, 4)
            return y.flatten(1) @ self.m

    model = nn.Sequential(nn.Identity(), Custom())
    r = count(model, (3, 6, 6))
    assert r.macs == 16 * 6 * 27 + 96 * 5
    row = _row(r, "1")
    assert row.source == "dispatch" and row.params == 6 * 27 + 96 * 5
    assert r.unsupported == []


def test_unknown_parameterised_module_is_reported_not_zero():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.s

    r = count(nn.Sequential(nn.Linear(4, 4), Scale()), (4,))
    assert r.macs == 16
    assert r.unsupported == ["Scale at 1: no cost formula and no counted ops for its 1 parameters"]


def test_user_formula_and_shared_module():
    class Scale2(nn.Module):
        def forward(self, x):
            return 2 * x

    @register_formula(Scale2)
    def _cost(module, inputs, output):
        return OpCount(macs=output.numel())

    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, shared, Scale2())
    r = count(model, (3,))
    assert r.macs == 2 * 9 + 3  # the shared layer costs twice
    assert r.params == 12  # but its parameters count once
    assert _row(r, "0").calls == 2
    with pytest.raises(ValueError, match="already registered"):
        register_formula(Scale2)(_cost)


def test_batch_and_training_mode_restored():
    model = nn.Sequential(nn.Linear(4, 2)).train()
    assert count(model, (4,), batch_size=8).macs == 8
    assert model.training


def test_published_wrn_28_10_figures():
    model = create_model("wrn-28-10")
    r = count(model, (3, 32, 32))
    assert (r.params, r.macs, r.macs_executed) == (36_479_194, 5_243_328_768, 5_243_328_768)
    de = count(model, (3, 32, 32), "deficient-efficient")
    assert de.macs == 5_245_638_922  # convs 5,243,322,368 + ReLU 2,310,144 + FC 6,410
    assert f"{de.macs:.5E}" == "5.24564E+09"


def test_conventions_and_format():
    assert list_conventions() == ["default", "deficient-efficient", "macs+elementwise"]
    with pytest.raises(UnknownNameError, match="counting convention 'flops'"):
        count(nn.Linear(2, 2), (2,), "flops")
    text = format_cost(count(create_model("simple-cnn", in_channels=1), (1, 8, 8)), depth=1)
    assert text.splitlines()[-1].startswith("total")
    assert "stage1" in text


def test_heavy_op_without_flop_formula_is_reported():
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    r = count(nn.Sequential(Spectral()), (16,))
    assert r.macs == 0
    assert any(u.startswith("aten._fft_r2c in 0") for u in r.unsupported), r.unsupported


def test_dispatch_counts_through_module_lists_are_not_doubled():
    class Mat(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return x @ self.w

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Mat(), Mat()])  # a container that is never called

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    r = count(Holder(), (4,))
    assert r.macs == 2 * 16
    assert sorted(row.name for row in r.modules) == ["blocks.0", "blocks.1"]


def test_darts_reference_mult_adds():
    # Gray et al. 2019, count.py at HEAD: DARTS (Sep, C=36, 20 cells) 5.37400E+08
    r = count(create_model("darts"), (3, 32, 32), "deficient-efficient")
    assert f"{r.macs:.5E}" == "5.37400E+08" and r.params == 3_349_342
