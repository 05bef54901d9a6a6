import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.inspect.attributions import attribute, grad_cam, integrated_gradients, saliency

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    )


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images[:8], dtype=torch.float32)[:, None] / 16


def test_integrated_gradients_are_complete(digits):
    model = _digits_cnn()
    baseline = torch.full((1, 8, 8), 0.1)
    x = digits[:4]
    res = integrated_gradients(model, x, target=3, baseline=baseline, steps=300)
    with torch.no_grad():
        gap = model(x)[:, 3] - model(baseline[None])[0, 3]
    sums = res.maps.flatten(1).sum(1)
    assert res.maps.shape == x.shape
    assert torch.allclose(sums, gap, rtol=0.01, atol=1e-4), (sums, gap)
    assert torch.allclose(res.delta, sums - gap, atol=1e-4)
    assert res.targets.tolist() == [3] * 4


def test_saliency_is_the_absolute_input_gradient(digits):
    model = _digits_cnn()
    res = saliency(model, digits[:2], target=[1, 7])
    x = digits[:2].clone().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(logits[0, 1] + logits[1, 7], x)
    assert torch.allclose(res.maps, g.abs(), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.fc = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def test_grad_cam_equals_the_hand_computation():
    torch.manual_seed(1)
    model = _Tiny()
    x = torch.randn(4, 1, 4, 4)
    res = grad_cam(model, x, "conv", target=2)
    a = model.conv(x).detach().requires_grad_(True)
    logit = model.fc(torch.tanh(a).flatten(1))[:, 2].sum()
    (g,) = torch.autograd.grad(logit, a)
    weights = g.mean((2, 3), keepdim=True)  # alpha_c: the gradient averaged over space
    hand = F.relu((weights * a.detach()).sum(1, keepdim=True))
    assert res.layer_maps.shape == (4, 1, 3, 3)
    assert torch.allclose(res.layer_maps, hand, atol=1e-6)
    up = F.interpolate(hand, size=(4, 4), mode="bilinear", align_corners=False)
    assert res.maps.shape == (4, 1, 4, 4) and torch.allclose(res.maps, up, atol=1e-6)
    assert (res.maps >= 0).all() and (res.layer_maps > 0).any()


def test_grad_cam_on_the_digits_cnn_keeps_modes_and_defaults_to_predictions(digits):
    model = _digits_cnn().train()
    res = attribute(model, digits, "grad_cam", layer="2")
    assert res.maps.shape == (8, 1, 8, 8) and (res.maps >= 0).all()
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        assert res.targets.tolist() == model(digits).argmax(1).tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "lime"}, "unknown attribution method 'lime'; known: saliency"),
        ({"method": "grad_cam"}, "grad_cam needs a layer"),
        ({"method": "saliency", "layer": "0"}, "a layer is for grad_cam only"),
        ({"method": "saliency", "target": 10}, "targets must be classes 0..9"),
        ({"method": "saliency", "target": [1, 2]}, "2 targets for 8 inputs"),
        ({"method": "grad_cam", "layer": "conv9"}, "no layer named 'conv9'"),
    ],
)
def test_bad_arguments_are_one_line(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attribute(_digits_cnn(), digits, **kwargs)


def test_missing_captum_names_the_extra(digits, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum.attr", None)
    monkeypatch.setitem(sys.modules, "captum", None)
    with pytest.raises(ImportError, match=r"pip install 'nettle\[attribution\]'"):
        saliency(_digits_cnn(), digits)


def test_the_plot_has_a_row_per_method_with_each_map_scaled_to_its_maximum(digits):
    from nettle.inspect.attributions import plot_attributions

    model = _digits_cnn()
    results = [
        grad_cam(model, digits, "2"),
        saliency(model, digits),
        integrated_gradients(model, digits),
    ]
    fig = plot_attributions(results, max_inputs=3)
    rows = [ax for ax in fig.axes if ax.images]
    assert [ax.get_ylabel() for ax in rows] == [
        "input",
        "Grad-CAM\n2",
        "saliency |grad|",
        "integrated gradients",
    ]
    assert len(rows[1].images) == 2  # the input under the Grad-CAM overlay
    sal = rows[2].images[0].get_array()
    assert sal.shape == (8, 26)  # three 8x8 maps with one-pixel gaps
    first = results[1].maps[0, 0]
    torch.testing.assert_close(torch.tensor(sal[:, :8].filled()), first / first.max())
    with pytest.raises(ValueError, match="no attributions to plot"):
        plot_attributions([])
