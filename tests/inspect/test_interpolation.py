import pytest
import torch
from torch import nn

from nettle.inspect.interpolation import interpolate_grid, plot_interpolation_grid
from nettle.inspect.plots import plot_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))


def test_the_grid_spans_the_plane_through_three_inputs():
    model = _model()
    x, y, z = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    grid = interpolate_grid(model, x, y, z, steps=5, layer="1")
    assert grid.inputs.shape == (5, 5, 1, 4, 4) and grid.outputs.shape == (5, 5, 4)
    assert torch.equal(grid.inputs[0, 0], x)
    torch.testing.assert_close(grid.inputs[4, 0], y)
    torch.testing.assert_close(grid.inputs[0, 4], z)
    torch.testing.assert_close(grid.inputs[4, 4], y + z - x)
    torch.testing.assert_close(grid.inputs[2, 1], x + 0.5 * (y - x) + 0.25 * (z - x))
    with torch.no_grad():
        torch.testing.assert_close(grid.outputs[2, 1], model(grid.inputs[2, 1][None])[0])
        relu = model[:2](grid.inputs[3, 2][None])[0]
    assert grid.activations.shape == (5, 5, 3, 4, 4)
    torch.testing.assert_close(grid.unit(1)[3, 2], relu[1].max())
    torch.testing.assert_close(grid.unit(2, "mean")[3, 2], relu[2].mean())
    fig = plot_interpolation_grid(grid, channel=1)
    assert len([ax for ax in fig.axes if ax.images]) == 4


def test_a_linear_model_is_linear_over_the_plane():
    model = nn.Linear(6, 2)
    x, y, z = torch.randn(3, 6)
    grid = interpolate_grid(model, x, y, z, steps=3)
    with torch.no_grad():
        fx, fy, fz = model(x), model(y), model(z)
    torch.testing.assert_close(grid.outputs[1, 2], fx + 0.5 * (fy - fx) + 1.0 * (fz - fx))


def test_bad_arguments_are_one_line():
    model = _model()
    x = torch.rand(1, 4, 4)
    with pytest.raises(ValueError, match="steps must be at least 2"):
        interpolate_grid(model, x, x, x, steps=1)
    with pytest.raises(ValueError, match=r"one shape, got \(1, 4, 4\), \(1, 4, 4\), \(4, 4\)"):
        interpolate_grid(model, x, x, x[0])
    grid = interpolate_grid(model, x, x, x, steps=2)
    with pytest.raises(ValueError, match="no layer was recorded"):
        grid.unit(0)
    grid = interpolate_grid(model, x, x, x, steps=2, layer="0")
    with pytest.raises(ValueError, match=r"channel 3 of '0' is outside 0\.\.2"):
        grid.unit(3)


def test_weights_view_shows_each_layer_weights_and_biases():
    model = _model()
    model[0].bias = None
    fig = plot_weights(model)
    axes = fig.axes
    assert len(axes) == 4  # two layers, weights and biases each
    assert axes[0].get_ylabel() == "0" and axes[2].get_ylabel() == "3"
    heights = sum(p.get_height() for p in axes[0].patches)
    assert heights == model[0].weight.numel()  # the histogram counts every weight
    assert [p.get_height() for p in axes[3].patches] == pytest.approx(model[3].bias.tolist())
    assert axes[1].texts[0].get_text() == "no bias"
    with pytest.raises(ValueError, match="no conv or linear layer"):
        plot_weights(nn.ReLU())
