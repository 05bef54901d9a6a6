from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread
from torch import nn

from nettle.inspect import (
    augmentation_effect,
    channel,
    interpolate_activation,
    prediction_probabilities,
    render,
    top_patches,
)
from nettle.inspect.plots import (
    plot_accuracy_vs_eps,
    plot_augmentation_effect,
    plot_feature_maps,
    plot_featurevis,
    plot_filters,
    plot_history,
    plot_interpolation,
    plot_probabilities,
    plot_render,
    plot_top_patches,
)
from nettle.inspect.probes import layer_output

pytestmark = pytest.mark.usefixtures("one_thread")


def _check_png(fig: Figure, tmp_path: Path, name: str) -> None:
    """Saved as a PNG (under the test's own tmp_path) that is not blank."""
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=80)
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels[..., :3].var() > 0


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def _cnn(in_channels=1):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 3),
    )


def _digits_like(n=40):
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, 8, 8)
    for i in range(n):
        r = int(torch.randint(1, 7, (1,), generator=gen))
        x[i, 0, r, 1:7] = 1.0  # a horizontal stroke at a random row
        x[i, 0, 1:7, 7 - r] = 0.5 * (i % 2)
    return x + 0.1 * torch.rand(x.shape, generator=gen)


def test_filters_and_feature_maps(tmp_path):
    model = _cnn(3)
    fig = plot_filters(model[0], "conv1")
    assert fig.get_suptitle() == "Filters of conv1: 6 x 3 x 3x3"
    assert _titles(fig)[:6] == [f"#{i}" for i in range(6)]
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (3, 3, 3) and img.min() == 0.0 and img.max() == 1.0  # per-filter scale
    _check_png(fig, tmp_path, "filters")
    fig = plot_filters(model[3], "conv2")
    assert fig.axes[0].images[0].get_array().shape == (3, 3)  # mean over 6 inputs, grey
    maps = layer_output(model, "1", torch.rand(1, 3, 8, 8))[0]
    fig = plot_feature_maps(maps, "relu1")
    assert fig.get_suptitle() == "Feature maps of relu1: (6, 8, 8)"
    assert "ch 5" in _titles(fig) and fig.axes[-1].get_ylabel() == "activation"  # colour bar
    _check_png(fig, tmp_path, "feature_maps")


def test_augmentation_effect_plot(tmp_path):
    model, x = _cnn(), _digits_like(1)[0]
    effect = augmentation_effect(model, "1", x, lambda t: torch.roll(t, 1, dims=-1))
    fig = plot_augmentation_effect(effect, x, "relu1", channels=3)
    titles = _titles(fig)
    assert titles[:2] == ["input", f"ch {titles[1].split()[1]} before"]
    assert {"augmented", "input"} <= set(titles) and sum("difference" in t for t in titles) == 3
    assert "relative change" in fig.get_suptitle()
    _check_png(fig, tmp_path, "augmentation_effect")


def test_history(tmp_path):
    records = [{"kind": "step", "step": 1, "loss": 9.0, "lr": 1.0}]
    for e in range(1, 11):
        records.append(
            {
                "kind": "epoch",
                "epoch": e,
                "train_loss": 2.0 / e,
                "test_loss": 2.2 / e,
                "train_acc": 1 - 0.5 / e,
                "test_acc": 1 - 0.6 / e,
                "lr": 0.1 * min(e / 3, 1) * (0.5 ** max(e - 5, 0)),
            }
        )
    fig = plot_history(records)
    loss, _, lr = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert lr.get_xlabel() == "epoch" and fig.get_suptitle() == "Training history"
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 1]  # the step record is left out
    assert list(loss.lines[0].get_xdata()) == list(range(1, 11))
    assert loss.get_shared_x_axes().joined(loss, lr)
    _check_png(fig, tmp_path, "history")
    with pytest.raises(ValueError, match="no epoch records"):
        plot_history(records[:1])


def test_accuracy_vs_eps(tmp_path):
    curves = {"FGSM": [(0.1, 0.6), (0.0, 0.95), (0.2, 0.3)], "PGD": {0.0: 0.95, 0.1: 0.4, 0.2: 0.1}}
    fig = plot_accuracy_vs_eps(curves, clean=0.95, norm="Linf")
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "epsilon (Linf), pixels in [0, 1]",
        "accuracy under attack (fraction)",
        "Accuracy vs epsilon",
    )
    assert list(ax.lines[0].get_xdata()) == [0.0, 0.1, 0.2]  # sorted by epsilon
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["FGSM", "PGD", "clean 0.950"]
    _check_png(fig, tmp_path, "accuracy_vs_eps")


def test_interpolation_is_linear_for_a_linear_unit(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    x0, x1 = torch.rand(1, 6, 6), torch.rand(1, 6, 6)
    alphas, v = interpolate_activation(model, "0", (1, 2, 2), x0, x1, steps=11)
    ends = layer_output(model, "0", torch.stack([x0, x1]))[:, 1, 2, 2]
    torch.testing.assert_close(v, (1 - alphas) * ends[0] + alphas * ends[1])
    _, every = interpolate_activation(model, "1", None, x0, x1, steps=5, reduce="mean")
    assert every.shape == (5, 3)
    model = _cnn()
    a, b = _digits_like(2)
    alphas, v = interpolate_activation(model, "4", 2, a, b, steps=21)
    fig = plot_interpolation(alphas, v, "channel 2", "relu2")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "alpha (0: x0, 1: x1)" and ax.get_ylabel() == "activation"
    assert ax.get_title() == "Activation of relu2 channel 2 along x0 -> x1"
    _check_png(fig, tmp_path, "interpolation")


def test_prediction_probabilities(tmp_path):
    model, x = _cnn(), _digits_like(60)
    y = torch.arange(60) % 3
    p = prediction_probabilities(model, (x, y), batch_size=16)
    torch.testing.assert_close(p.probs.sum(1), torch.ones(60))
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(p.predicted, logits.argmax(1)) and torch.equal(p.labels, y)
    assert int(p.correct.sum()) == int((logits.argmax(1) == y).sum())
    s = prediction_probabilities(model, x, activation="sigmoid")
    torch.testing.assert_close(s.probs, torch.sigmoid(logits)) and s.labels is None
    with pytest.raises(ValueError, match="activation must be one of"):
        prediction_probabilities(model, x, activation="tanh")
    fig = plot_probabilities(p)
    top, every = fig.axes
    assert (top.get_xlabel(), top.get_ylabel()) == ("top predicted probability", "examples")
    assert every.get_xlabel() == "predicted probability (all classes)"
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels[0].startswith("correct (") and labels[1].startswith("wrong (")
    _check_png(fig, tmp_path, "probabilities")


def test_top_patches_and_featurevis(tmp_path):
    model, x = _cnn(), _digits_like(40)
    result = top_patches(model, x, "4", channel=1, k=6)
    fig = plot_top_patches(result)
    assert fig.get_suptitle().startswith("Top 6 inputs of 4 channel 1 (title: example #")
    assert fig.axes[0].get_ylabel() == "input" and fig.axes[6].get_ylabel() == "patch"
    result = top_patches(model, x, "4", channel=1, k=9)
    fig = plot_top_patches(result)  # nine wrap as 5 + 4 in two input/patch row pairs
    assert [ax.get_ylabel() for ax in fig.axes[::5]] == ["input", "patch"] * 2
    assert sum(ax.axison for ax in fig.axes) == 18
    assert _titles(fig)[0] == f"#{result.indices[0]}: {result.values[0]:.3g}"
    assert len(fig.axes[0].patches) == 1  # the receptive field outlined
    _check_png(fig, tmp_path, "top_patches")
    vis = [render(model, channel("4", c), shape=(1, 8, 8), steps=30) for c in range(4)]
    fig = plot_featurevis(vis)
    assert fig.get_suptitle() == "Feature visualisation"
    assert _titles(fig)[0].startswith("channel(4:0)\n")
    _check_png(fig, tmp_path, "featurevis")
    fig = plot_render(vis[2], reference=0.5, title="relu2 channel 2")
    _, curve_ax = fig.axes
    assert curve_ax.get_xlabel() == "optimisation step" and len(curve_ax.lines) == 2
    assert list(curve_ax.lines[0].get_ydata()) == vis[2].curve
    assert fig.get_suptitle() == "Feature visualisation: relu2 channel 2"
    _check_png(fig, tmp_path, "featurevis_curve")
