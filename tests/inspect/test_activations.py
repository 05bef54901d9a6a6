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


def test_streamed_stats_equal_the_whole_tensor():
    model = _model()
    x = torch.randn(50, 1, 8, 8)
    (s,) = activation_stats(model, x, ["0"], batch_size=7, percentiles=(10, 90))
    with torch.no_grad():
        a = model[0](x).flatten()
    assert s.count == a.numel() == 50 * 4 * 64 and s.shape == [4, 8, 8]
    assert s.mean == pytest.approx(float(a.mean()), abs=1e-6)
    assert s.std == pytest.approx(float(a.std()), rel=1e-5)
    assert (s.min, s.max) == (float(a.min()), float(a.max()))
    expected = torch.quantile(a, torch.tensor([0.1, 0.9]))
    assert [s.percentiles[10], s.percentiles[90]] == pytest.approx(expected.tolist(), abs=1e-6)


def test_recording_survives_in_place_ops_and_restores_each_mode():
    model = nn.Sequential(nn.Identity(), nn.ReLU(inplace=True), nn.BatchNorm1d(3))
    model[2].train(False)  # a frozen norm inside a model in training mode
    x = torch.tensor([[-1.0, 2.0, -3.0]])
    acts = capture(model, x, ["0"])
    assert torch.equal(acts["0"], x)  # recorded before the in-place ReLU ran
    assert model.training and not model[2].training


def test_data_forms_and_layers_never_called():
    from torch.utils.data import DataLoader, TensorDataset

    model = _model()
    x, y = torch.rand(9, 1, 8, 8), torch.zeros(9, dtype=torch.long)
    ref = capture(model, x, ["1"])["1"]
    for data in [(x, y), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=4)]:
        assert torch.equal(capture(model, data, ["1"])["1"], ref)
    assert capture(model, x, ["1"], max_batches=2, batch_size=4)["1"].shape[0] == 8

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Identity(), nn.Identity()

        def forward(self, t):
            return self.used(t)

    with pytest.raises(ValueError, match="layer 'unused' was not called"):
        capture(Skips(), x, ["used", "unused"])
