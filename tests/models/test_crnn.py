"""The CRNN: parameters and MACs against hand counts (the BiLSTM included), its output layout,
and which convolutions the substitution hook builds."""

import pytest
import torch
from torch import nn

from nettle.measure import count
from nettle.models import create_model
from nettle.nn.substitutes import get_conv_class


def _lstm(i: int, h: int) -> int:
    """One direction of one LSTM layer: 4 gates of (W_ih, W_hh, b_ih, b_hh)."""
    return 4 * h * (i + h) + 2 * 4 * h


def test_parameters_equal_the_hand_count():
    convs = 9 * (1 * 32 + 32 * 64 + 64 * 128)
    bns = 2 * (32 + 64 + 128)
    rnn = 2 * _lstm(128, 64)
    fc = 128 * 11 + 11  # 10 digits + the blank
    assert (convs, bns, rnn, fc) == (92_448, 448, 99_328, 1_419)
    model = create_model("crnn", in_channels=1)
    assert sum(p.numel() for p in model.parameters()) == convs + bns + rnn + fc == 193_643


def test_macs_count_the_bilstm_at_every_step():
    """1x8x64: 8x64 stem, 4x32 and 2x32 later convs, T = 32 steps each way."""
    report = count(create_model("crnn", in_channels=1), (1, 8, 64))
    rows = {r.name: r for r in report.modules}
    stem = 8 * 64 * 32 * 9
    stage1 = 4 * 32 * 64 * 32 * 9
    stage2 = 2 * 32 * 128 * 64 * 9
    rnn = 2 * 32 * 4 * 64 * (128 + 64)  # directions * steps * gates * H * (I + H)
    fc = 32 * 128 * 11
    assert rows["rnn"].macs == rnn == 3_145_728
    assert report.macs == stem + stage1 + stage2 + rnn + fc == 10_416_128
    assert report.params == 193_643
    assert report.unsupported == []


def test_output_is_per_column_log_probabilities():
    torch.manual_seed(0)
    model = create_model("crnn", num_classes=10, in_channels=1).eval()
    out = model(torch.rand(3, 1, 8, 84))
    assert out.shape == (3, 11, 42)  # (N, classes + blank, W // 2)
    assert torch.allclose(out.exp().sum(1), torch.ones(3, 42), atol=1e-5)
    wider = model(torch.rand(2, 1, 16, 40))  # a taller line is averaged over its height
    assert wider.shape == (2, 11, 20)


def test_columns_far_apart_do_not_interact_before_the_lstm():
    """The conv features of column t only see nearby pixels: the LSTM links the line."""
    torch.manual_seed(0)
    model = create_model("crnn", in_channels=1, layers=2).eval()
    x = torch.rand(1, 1, 8, 64)
    y = x.clone()
    y[..., 60:] = 0
    feats = {}
    model.collapse.register_forward_hook(lambda m, i, o: feats.setdefault(len(feats), o))
    model(x), model(y)
    assert torch.equal(feats[0][..., :20], feats[1][..., :20])
    assert model.rnn.num_layers == 2 and model.rnn.bidirectional


def test_every_conv_but_the_stem_goes_through_the_hook(monkeypatch):
    class Probe(nn.Conv2d):
        pass

    def hook(spec):
        if spec != "Probe":
            return get_conv_class(spec)
        return lambda c_in, c_out, k, **kw: Probe(c_in, c_out, k, **kw)

    monkeypatch.setattr("nettle.models.crnn.get_conv_class", hook)
    modules = dict(create_model("crnn", in_channels=1, conv="Probe").named_modules())
    probes = [n for n, m in modules.items() if type(m) is Probe]
    dense = [n for n, m in modules.items() if type(m) is nn.Conv2d]
    assert (probes, dense) == (["stage1.0", "stage2.0"], ["stem.0"])


@pytest.mark.parametrize("conv", ["Sep", "Shuffle_4", "Generic_0.25"])
def test_substitutes_shrink_the_convs_and_keep_the_output(conv):
    dense = create_model("crnn", in_channels=1)
    small = create_model("crnn", in_channels=1, conv=conv)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in dense.parameters())
    assert small.eval()(torch.rand(2, 1, 8, 32)).shape == (2, 11, 16)
