import pytest
import torch
from torch import nn

from nettle.inspect import activation_stats, capture, top_k


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)
    )


def test_capture_matches_a_manual_forward_and_restores_the_model():
    model = _model().train()
    x = torch.rand(10, 1, 8, 8)
    acts = capture(model, x, ["1", "4"], batch_size=3)
    assert acts["1"].shape == (10, 4, 8, 8) and acts["4"].shape == (10, 3)
    with torch.no_grad():
        torch.testing.assert_close(acts["1"], model[1](model[0](x)))
    assert model.training and not any(m._forward_hooks for m in model.modules())


def test_stats_by_hand():
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    x = torch.tensor([[-1.0, 0.0, 1.0, 3.0]])
    (s,) = activation_stats(model, x, ["1"], percentiles=(50,))
    assert (s.mean, s.zero_fraction, s.min, s.max) == (1.0, 0.5, 0.0, 3.0)
    assert s.percentiles[50] == 0.5 and s.shape == [4]


def test_top_k_streaming_equals_brute_force():
    model = _model()
    x = torch.rand(100, 1, 8, 8)
    got = top_k(model, x, "1", channel=2, k=7, batch_size=13)
    with torch.no_grad():
        a = model[1](model[0](x))[:, 2].flatten(1)
    vals, idx = a.max(1).values.sort(descending=True, stable=True)
    assert got.indices == idx[:7].tolist()
    torch.testing.assert_close(torch.tensor(got.values), vals[:7])
    for i, (y, xx) in zip(got.indices, got.positions):
        assert a[i].view(8, 8)[y, xx] == a[i].max()
    neuron = top_k(model, x, "1", channel=2, k=3, neuron=(4, 5))
    expected = a[:, 4 * 8 + 5].sort(descending=True, stable=True).indices[:3].tolist()
    assert neuron.indices == expected


def test_unknown_layer_suggests_names():
    with pytest.raises(ValueError, match="no layer named 'l' in the model"):
        capture(_model(), torch.rand(1, 1, 8, 8), ["l"])
    from collections import OrderedDict

    named = nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 2, 3), relu1=nn.ReLU()))
    with pytest.raises(ValueError, match="did you mean conv1"):
        capture(named, torch.rand(1, 1, 8, 8), ["conv"])
