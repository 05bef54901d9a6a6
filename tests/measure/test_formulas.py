"""Built-in cost formulas: hand-computed counts, and agreement with torch's FlopCounterMode."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

from nettle.measure import OpCount, count, get_formula, register_formula, registered_types


def cost(module: nn.Module, *inputs: torch.Tensor) -> OpCount:
    """The formula's OpCount for one call of `module` (whole batch)."""
    with torch.no_grad():
        output = module.eval()(*inputs)
    return get_formula(module)(module, inputs, output)


def dispatch_macs(fn) -> int:
    """Multiply-adds torch's own dispatch-level counter sees (FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def test_conv_with_groups_dilation_stride_by_hand():
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4, bias=True)
    c = cost(conv, torch.rand(2, 8, 15, 15))
    # (15 + 4 - 5) / 2 + 1 = 8 output rows and columns; 12 outputs x (8/4) inputs x 9 taps each
    assert c.macs == 2 * 8 * 8 * 12 * 2 * 9
    assert c.bias == 2 * 12 * 8 * 8
    assert c.executed == c.macs and (c.relu, c.norm, c.pool) == (0, 0, 0)


def test_conv1d_conv3d_by_hand():
    assert cost(nn.Conv1d(4, 6, 5, bias=False), torch.rand(1, 4, 20)).macs == 16 * 6 * 4 * 5
    conv3 = nn.Conv3d(2, 3, 3, padding=1)
    assert cost(conv3, torch.rand(1, 2, 4, 4, 4)).macs == 64 * 3 * 2 * 27


def test_transposed_convs_use_the_input_size():
    # input positions x Cin x (Cout / groups) x kernel taps, not output positions
    up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, groups=2)
    c = cost(up, torch.rand(1, 16, 8, 8))
    assert c.macs == 64 * 16 * 4 * 16
    assert c.bias == 8 * 16 * 16  # bias adds over the 16x16 output
    assert cost(nn.ConvTranspose1d(4, 6, 3, stride=2), torch.rand(1, 4, 5)).macs == 5 * 4 * 6 * 3
    assert cost(nn.ConvTranspose3d(2, 3, 2, stride=2), torch.rand(1, 2, 2, 2, 2)).macs == 384


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(6, 9, 3, stride=2, padding=1, groups=3), (2, 6, 9, 9)),
        (nn.Conv1d(4, 8, 3, dilation=3), (3, 4, 17)),
        (nn.ConvTranspose2d(6, 4, 3, stride=2, groups=2), (2, 6, 5, 5)),
        (nn.ConvTranspose3d(2, 4, 3, stride=2), (1, 2, 3, 3, 3)),
        (nn.Linear(7, 5), (2, 3, 7)),
    ],
)
def test_conv_and_linear_agree_with_flop_counter(module, shape):
    x = torch.rand(shape)
    assert cost(module, x).macs == dispatch_macs(lambda: module(x))


def test_linear_and_bilinear_by_hand():
    c = cost(nn.Linear(10, 4), torch.rand(2, 7, 10))
    assert (c.macs, c.bias) == (2 * 7 * 10 * 4, 2 * 7 * 4)
    assert cost(nn.Linear(10, 4, bias=False), torch.rand(3, 10)).bias == 0
    # y_k = x1^T A_k x2 + b_k: in1 * in2 for A_k x2, then in1 for the dot product with x1
    c = cost(nn.Bilinear(3, 4, 5), torch.rand(2, 3), torch.rand(2, 4))
    assert (c.macs, c.bias) == (2 * 5 * 3 * (4 + 1), 2 * 5)


def test_norms_activations_pools_upsampling():
    x = torch.rand(2, 4, 6, 6)  # 288 elements
    assert cost(nn.BatchNorm2d(4), x).norm == 2 * 288  # scale and shift
    assert cost(nn.InstanceNorm2d(4), x).norm == 288  # not affine by default
    assert cost(nn.GroupNorm(2, 4), x).norm == 2 * 288
    assert cost(nn.LayerNorm(6, elementwise_affine=False), x).norm == 288
    assert cost(nn.ReLU(), x).relu == 288 and cost(nn.ReLU(), x).macs == 0
    assert cost(nn.GELU(), x).activation == 288 and cost(nn.GELU(), x).relu == 0
    assert cost(nn.MaxPool2d(2), x).pool == 2 * 4 * 3 * 3 * 4  # output elements x window
    assert cost(nn.AvgPool2d(3, stride=1), x).pool == 2 * 4 * 4 * 4 * 9
    assert cost(nn.AvgPool1d(3, stride=1), torch.rand(2, 10)).pool == 2 * 8 * 3
    assert cost(nn.MaxPool3d(2), torch.rand(1, 1, 4, 4, 4)).pool == 8 * 8
    assert cost(nn.AdaptiveAvgPool2d(1), x).pool == 288  # every input element once
    assert cost(nn.Upsample(scale_factor=2), x).upsample == 4 * 288  # one op per output
    assert cost(nn.Upsample(scale_factor=2, mode="bilinear"), x).upsample == 4 * 4 * 288
    for free in (nn.Identity(), nn.Dropout(), nn.Flatten(), nn.ZeroPad2d(1)):
        assert cost(free, x) == OpCount()


# gate mat-vecs per step, layer and direction: gates * H * (I + H), with I = H * dirs above
LSTM_2x2 = 2 * (4 * 7 * (5 + 7) + 4 * 7 * (2 * 7 + 7))  # bidirectional, 2 layers, I=5, H=7


def test_lstm_bidirectional_two_layers_seq_first_and_batch_first():
    t, n = 6, 3
    seq_first = nn.LSTM(input_size=5, hidden_size=7, num_layers=2, bidirectional=True)
    c = cost(seq_first, torch.rand(t, n, 5))
    assert c.macs == LSTM_2x2 * t * n
    assert c.bias == 2 * 2 * t * n * 2 * 4 * 7  # layers x dirs x steps x (b_ih + b_hh)
    assert c.elementwise == 2 * 2 * t * n * 4 * 7
    batch_first = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    assert cost(batch_first, torch.rand(n, t, 5)).macs == LSTM_2x2 * t * n
    # through count: per example, and the CPU LSTM kernel is covered by the formula
    r = count(batch_first, (t, 5))
    assert (r.macs, r.unsupported) == (LSTM_2x2 * t, [])


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_gru_rnn_projection_and_packed_sequences():
    gru = nn.GRU(4, 3, bidirectional=True, batch_first=True)
    assert cost(gru, torch.rand(2, 5, 4)).macs == 2 * 3 * 3 * (4 + 3) * 5 * 2
    assert cost(nn.RNN(4, 3, nonlinearity="relu"), torch.rand(5, 1, 4)).macs == 3 * 7 * 5
    # proj_size: the recurrent input is the projection (3), plus the projection H x P itself
    lstm = nn.LSTM(5, 8, num_layers=2, proj_size=3)
    per_step = (4 * 8 * (5 + 3) + 8 * 3) + (4 * 8 * (3 + 3) + 8 * 3)
    assert cost(lstm, torch.rand(6, 1, 5)).macs == per_step * 6
    # a pack of lengths 5, 3, 2 runs 10 steps in all, not 3 x 5
    packed = pack_padded_sequence(torch.rand(5, 3, 4), torch.tensor([5, 3, 2]))
    assert cost(gru, packed).macs == 2 * 3 * 3 * (4 + 3) * 10


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.LSTM(5, 7, num_layers=2, bidirectional=True), (6, 3, 5)),
        (nn.GRU(5, 7, num_layers=2, bidirectional=True, batch_first=True), (3, 6, 5)),
        (nn.LSTM(5, 8, num_layers=2, proj_size=3), (6, 3, 5)),
        (nn.RNN(5, 7), (6, 3, 5)),
    ],
)
def test_recurrent_formulas_agree_with_flop_counter_on_meta(module, shape):
    # on the meta device torch decomposes the recurrent kernels into counted matmuls
    module, x = module.to("meta"), torch.empty(shape, device="meta")
    assert cost(module, x).macs == dispatch_macs(lambda: module(x))


def test_recurrent_cells():
    x = torch.rand(3, 4)
    assert cost(nn.LSTMCell(4, 5), x).macs == 3 * 4 * 5 * (4 + 5)
    assert cost(nn.GRUCell(4, 5), x).macs == 3 * 3 * 5 * (4 + 5)
    assert cost(nn.RNNCell(4, 5), x).macs == 3 * 5 * (4 + 5)
    assert cost(nn.RNNCell(4, 5, bias=False), torch.rand(4)).bias == 0


def test_multihead_attention_with_kdim_vdim_by_hand():
    mha = nn.MultiheadAttention(8, 2, kdim=5, vdim=3)  # sequence first
    lq, lk, n = 4, 6, 2
    q, k, v = torch.rand(lq, n, 8), torch.rand(lk, n, 5), torch.rand(lk, n, 3)
    c = cost(mha, q, k, v)
    projections = lq * 8 * 8 + lk * 5 * 8 + lk * 3 * 8
    products = 2 * lq * lk * 8  # Q K^T and A V, summed over the heads
    assert c.macs == n * (projections + products + lq * 8 * 8)
    assert c.bias == n * ((lq + 2 * lk) * 8 + lq * 8)
    assert c.macs == dispatch_macs(lambda: mha(q, k, v, need_weights=True))


def test_multihead_attention_batch_first_and_extra_keys():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.rand(2, 5, 8)
    assert cost(mha, x, x, x).macs == 2 * (4 * 5 * 64 + 2 * 5 * 5 * 8)
    extra = nn.MultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True)
    x = torch.rand(4, 2, 8)
    assert cost(extra, x, x, x).macs == dispatch_macs(lambda: extra(x, x, x, need_weights=True))


def test_opcount_sum_and_executed():
    a = OpCount(macs=10, bias=1)
    b = OpCount(macs=5, executed_macs=50, reference_macs=7)
    total = a + b
    assert (total.macs, total.bias, total.executed, total.reference_macs) == (15, 1, 60, 17)
    assert (a + a).executed_macs is None and (a + a).reference_macs is None
    assert a.as_dict()["macs"] == 10


def test_registry_lookup_and_errors():
    class MyConv(nn.Conv2d):
        pass

    assert get_formula(MyConv(1, 1, 1)) is get_formula(nn.Conv2d(1, 1, 1))  # nearest base
    assert get_formula(nn.Sequential()) is None
    assert {nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.RNNBase} <= set(registered_types())
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_formula(int)
    with pytest.raises(ValueError, match="Conv2d is already registered"):
        register_formula(nn.Conv2d)(lambda m, i, o: OpCount())
