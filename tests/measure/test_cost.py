"""count(): hooks, ownership, dispatch fallback, unsupported reports, published figures."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure import (
    OpCount,
    aggregate_modules,
    count,
    format_cost,
    list_conventions,
    register_formula,
)
from nettle.measure import formulas as formulas_module
from nettle.models import create_model
from nettle.registry import UnknownNameError


def _row(report, name):
    return next(r for r in report.modules if r.name == name)


class Mat(nn.Module):
    """A user's layer with no formula: `x @ w`."""

    def __init__(self, n=4):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n, n))

    def forward(self, x):
        return x @ self.w


def test_small_net_rows_totals_and_conventions():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 0: 8x8 out
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 3: 4x4 out
        nn.Flatten(),
        nn.Linear(64, 3),  # 5
    )
    conv, relu, pool, fc = 64 * 4 * 2 * 9, 4 * 64, 4 * 16 * 4, 64 * 3
    r = count(net, (2, 8, 8))
    assert (r.macs, r.macs_executed) == (conv + fc, conv + fc)
    assert r.params == r.trainable_params == 2 * 4 * 9 + 4 + 8 + 64 * 3 + 3
    assert [row.name for row in r.modules] == ["0", "1", "2", "3", "4", "5"]
    assert (_row(r, "0").input_shape, _row(r, "0").output_shape) == ([1, 2, 8, 8], [1, 4, 8, 8])
    de = count(net, (2, 8, 8), "deficient-efficient")  # + ReLU, pooling, Linear bias
    assert de.macs == conv + relu + pool + fc + 3
    assert de.macs_executed == conv + fc  # executed multiply-adds do not follow the convention
    everything = count(net, (2, 8, 8), "macs+elementwise")  # + conv bias, BN scale and shift
    assert everything.macs == conv + 4 * 64 + 2 * 4 * 64 + relu + pool + fc + 3


def test_functional_ops_in_unknown_modules_are_counted_and_attributed():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
            self.m = nn.Parameter(torch.randn(6 * 4 * 4, 5))
            self.e = nn.Parameter(torch.randn(5, 2))

        def forward(self, x):
            y = F.conv2d(x, self.w)  # (N, 6, 4, 4)
            z = y.flatten(1) @ self.m
            return torch.einsum("bi,ij->bj", z, self.e)

    model = nn.Sequential(nn.Identity(), Custom())
    r = count(model, (3, 6, 6), batch_size=2)
    assert r.macs == r.macs_executed == 16 * 6 * 27 + 96 * 5 + 5 * 2  # per example
    row = _row(r, "1")
    assert (row.source, row.params, row.calls) == ("dispatch", 6 * 27 + 96 * 5 + 10, 1)
    assert row.output_shape == [2, 2]
    assert r.unsupported == []


def test_attention_kernel_called_functionally_is_counted():
    class SelfAttention(nn.Module):
        def forward(self, x):  # x: (N, heads, L, d)
            return F.scaled_dot_product_attention(x, x, x)

    r = count(SelfAttention(), (2, 8, 16))
    assert r.macs == 2 * 2 * 8 * 8 * 16  # Q K^T and A V for each of the 2 heads
    assert r.unsupported == []


def test_in_place_and_fused_matrix_products_are_counted():
    class Gemms(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = nn.Parameter(torch.randn(4, 5)), nn.Parameter(torch.randn(5))
            self.stack = nn.Parameter(torch.randn(3, 4, 5))

        def forward(self, x):
            n = x.shape[0]
            c = torch.zeros(n, 5).addmm_(x, self.w)
            d = torch.zeros(n, 5).addbmm(x.expand(3, n, 4), self.stack)
            e = torch.zeros(3, n, 5).baddbmm_(x.expand(3, n, 4), self.stack).sum(0)
            return c + d + e + torch._addmm_activation(self.b, x, self.w)

    r = count(Gemms(), (4,))
    assert (r.macs, r.unsupported) == (20 + 60 + 60 + 20, [])


def test_formula_owns_its_subtree():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    r = count(Block(), (5, 8))
    assert r.macs == 3 * 5 * 64 + 2 * 5 * 5 * 8 + 5 * 64
    assert [row.name for row in r.modules] == ["attn"]  # out_proj is not counted again
    assert _row(r, "attn").params == 4 * 64 + 4 * 8

    class Pair(nn.Module):  # a container whose formula replaces its children's costs
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), Mat()

        def forward(self, x):
            return self.b(self.a(x))

    @register_formula(Pair)
    def _pair_cost(module, inputs, output):
        return OpCount(macs=1, executed_macs=100)

    r = count(nn.Sequential(Pair()), (4,))
    assert (r.macs, r.macs_executed, [row.name for row in r.modules]) == (1, 100, ["0"])


def test_transformer_layer_counts_attention_and_feed_forward():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    r = count(layer, (5, 16))
    attention = 3 * 5 * 256 + 2 * 5 * 5 * 16 + 5 * 256
    assert r.macs == attention + 2 * 5 * 16 * 32
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


def test_recurrent_kernel_without_formula_is_reported(monkeypatch):
    monkeypatch.delitem(formulas_module._FORMULAS, nn.RNNBase)
    r = count(nn.Sequential(nn.LSTM(4, 3)), [torch.rand(5, 1, 4)])
    assert r.macs == 0
    assert r.unsupported == [
        "aten.mkldnn_rnn_layer in 0",
        "LSTM at 0: no cost formula and no counted ops for its 108 parameters",
    ]


def test_heavy_op_without_flop_formula_is_reported():
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    r = count(nn.Sequential(Spectral()), (16,))
    assert r.macs == 0
    assert r.unsupported == ["aten._fft_r2c in 0"]


def test_shared_modules_count_per_call_and_params_once():
    shared = nn.Linear(3, 3)
    mat = Mat(3)
    r = count(nn.Sequential(shared, mat, shared, mat), (3,))
    assert r.macs == 4 * 9
    assert r.params == 12 + 9
    assert (_row(r, "0").calls, _row(r, "0").macs) == (2, 18)  # formula row
    assert (_row(r, "1").calls, _row(r, "1").macs) == (2, 18)  # dispatch row


def test_module_shared_by_two_parents_is_counted_under_one_name():
    mat = Mat()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Sequential(mat), nn.Sequential(nn.ReLU(), mat)

        def forward(self, x):
            return self.a(self.b(x))  # b (the second owner) runs first

    r = count(Net(), (4,))
    assert r.macs == 2 * 16
    assert [(row.name, row.calls) for row in r.modules if row.source == "dispatch"] == [("a.0", 2)]


def test_dispatch_counts_through_module_lists_are_not_doubled():
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


def test_inputs_batch_modes_and_placement():
    model = nn.Sequential(nn.Linear(4, 2), nn.Dropout()).train()
    model[1].eval()
    assert count(model, (4,), batch_size=8).macs == 8  # per example
    assert model.training and model[0].training and not model[1].training  # modes restored
    bilinear = nn.Bilinear(3, 4, 5)
    assert count(bilinear, [(3,), (4,)]).macs == 5 * 3 * 5  # several input shapes
    assert count(bilinear, (torch.rand(2, 3), torch.rand(2, 4)), batch_size=2).macs == 75
    assert count(nn.Linear(4, 2).double(), (4,)).macs == 8  # inputs take the model's dtype
    with pytest.raises(ValueError, match="the model is on meta, not on cpu"):
        count(nn.Linear(4, 2, device="meta"), (4,), device="cpu")
    with pytest.raises(UnknownNameError, match="counting convention 'flops'"):
        count(nn.Linear(2, 2), (2,), "flops")


def test_meta_device_gives_the_same_counts():
    torch.manual_seed(0)
    model = create_model("simple-cnn", in_channels=1)
    cpu = count(model, (1, 8, 8), "macs+elementwise")
    meta = count(model.to("meta"), (1, 8, 8), "macs+elementwise")
    assert cpu.to_dict() == meta.to_dict()


def test_format_and_aggregation():
    assert list_conventions() == ["default", "deficient-efficient", "macs+elementwise"]
    r = count(create_model("simple-cnn", in_channels=1), (1, 8, 8))
    top = aggregate_modules(r, depth=1)
    assert sum(row.macs for row in top) == r.macs
    assert "stage1" in [row.name for row in top] and len(top) < len(r.modules)
    text = format_cost(r, depth=1)
    assert text.splitlines()[-1].split() == [
        "total",
        f"{r.params:,}",
        f"{r.macs:,}",
        f"{r.macs_executed:,}",
    ]
    assert set(r.to_dict()) >= {"params", "macs", "macs_executed", "modules", "unsupported"}


def test_published_wrn_28_10_figures():
    model = create_model("wrn-28-10")
    r = count(model, (3, 32, 32))
    assert (r.params, r.macs, r.macs_executed) == (36_479_194, 5_243_328_768, 5_243_328_768)
    assert r.unsupported == []
    de = count(model.to("meta"), (3, 32, 32), "deficient-efficient")
    assert de.macs == 5_245_638_922  # convs 5,243,322,368 + ReLU 2,310,144 + FC 6,410
    assert f"{de.macs:.5E}" == "5.24564E+09"
    # + conv/fc bias, BN scale and shift, ReLU, pooling: ptflops' count less its double counts
    everything = count(model, (3, 32, 32), "macs+elementwise")
    assert everything.macs == 5_243_328_768 + 10 + 2 * 2_310_144 + 2_310_144 + 640 * 64


def test_resnet50_figures():
    # torchvision: 25,557,032 parameters, "4.09 GFLOPS" (= multiply-adds of conv and fc)
    r = count(create_model("resnet50", num_classes=1000).to("meta"), (3, 224, 224))
    assert (r.params, r.macs) == (25_557_032, 4_089_184_256)


def test_darts_reference_mult_adds():
    # Gray et al. 2019, count.py at HEAD: DARTS (Sep, C=36, 20 cells) 5.37400E+08
    r = count(create_model("darts").to("meta"), (3, 32, 32), "deficient-efficient")
    assert f"{r.macs:.5E}" == "5.37400E+08" and r.params == 3_349_342
