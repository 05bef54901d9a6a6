import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.inspect import channel, deepdream, direction, fourier_image, neuron, render
from nettle.inspect.featurevis import (
    COLOR_CORRELATION_SVD_SQRT,
    jitter,
    pad,
    random_rotate,
    standard_transforms,
    to_valid_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_cnn():
    """A small CNN trained for 40 Adam steps on scikit-learn's 8x8 digits (over 90% train)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(40):
        idx = torch.randint(len(x), (128,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9
    return model, x


def test_rendered_channels_beat_data_and_random_images(digits_cnn):
    model, x = digits_cnn
    with torch.no_grad():
        data = model[:4](x).mean((2, 3))
        noise = model[:4](torch.rand(1000, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
        noise = noise.mean((2, 3))
    for c in range(0, 8, 2):
        vis = render(model, channel("3", c), shape=(1, 8, 8), steps=256)
        assert vis.image.shape == (1, 8, 8) and len(vis.curve) == 256
        assert vis.value > 1.2 * data[:, c].max(), c  # above the best of 1,797 digits
        assert vis.value > 1.2 * noise[:, c].max(), c  # and the best of 1,000 noise images
        assert sum(vis.curve[-10:]) > sum(vis.curve[:10])


def _rgb_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_seed_fixes_the_image_and_the_model_is_untouched():
    model = _rgb_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = render(model, channel("3", 1), shape=(3, 20, 20), steps=6, seed=3)
    b = render(model, channel("3", 1), shape=(3, 20, 20), steps=6, seed=3)
    c = render(model, channel("3", 1), shape=(3, 20, 20), steps=6, seed=4)
    assert torch.equal(a.image, b.image) and a.curve == b.curve
    assert not torch.equal(a.image, c.image)
    assert a.image.shape == (3, 20, 20) and a.image.min() > 0 and a.image.max() < 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert model.training and not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_objective_rises_for_both_parameterisations(param):
    model = _rgb_model()
    objective = neuron("3", 0) + 0.5 * deepdream("1")
    vis = render(model, objective, shape=(3, 16, 16), steps=40, param=param, transforms=[])
    assert vis.curve[-1] > vis.curve[0] + 0.1 and vis.value == pytest.approx(vis.curve[-1], rel=0.2)


def test_objective_algebra_by_hand():
    acts = {"a": torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5) / 10}
    acts["fc"] = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
    a = acts["a"]
    torch.testing.assert_close(neuron("a", 1)(acts), a[:, 1, 2, 2])  # centre of the map
    torch.testing.assert_close(neuron("a", 2, 0, 4)(acts), a[:, 2, 0, 4])
    torch.testing.assert_close(channel("a", 0)(acts), a[:, 0].mean((1, 2)))
    torch.testing.assert_close(deepdream("a")(acts), (a**2).mean((1, 2, 3)))
    v = torch.tensor([1.0, 0.0, -2.0])
    torch.testing.assert_close(direction("a", v)(acts), (a[:, 0] - 2 * a[:, 2]).mean((1, 2)))
    torch.testing.assert_close(direction("fc", v)(acts), torch.tensor([-5.0, 2.5]))
    combo = channel("a", 0) - 2 * neuron("fc", 1) + deepdream("a") * 0.5
    expected = a[:, 0].mean((1, 2)) - 2 * acts["fc"][:, 1] + 0.5 * (a**2).mean((1, 2, 3))
    torch.testing.assert_close(combo(acts), expected)
    assert combo.layers == ("a", "fc")
    total = sum([channel("a", 0), channel("a", 1)])
    torch.testing.assert_close(total(acts), a[:, :2].mean((2, 3)).sum(1))
    with pytest.raises(TypeError):
        channel("a", 0) * channel("a", 1)


def test_fourier_parameterisation_facts():
    h, w = 6, 10
    params, image_fn = fourier_image((3, h, w), generator=torch.Generator().manual_seed(0))
    (spec,) = params
    assert spec.shape == (1, 3, h, w // 2 + 1, 2)
    with torch.no_grad():
        spec.zero_()
        torch.testing.assert_close(image_fn(), torch.full((1, 3, h, w), 0.5))  # sigmoid(0)
        spec[0, :, 0, 0, 0] = 1.0  # the DC term alone: scale max(h, w) * sqrt(hw), / (hw), / 4
        dc = max(h, w) * math.sqrt(h * w) / (h * w) / 4
        c = torch.tensor(COLOR_CORRELATION_SVD_SQRT)
        expected = torch.sigmoid((c / c.norm(dim=0).max()).sum(1) * dc)
        torch.testing.assert_close(image_fn()[0, :, 3, 7], expected)
    # Lucid's matrix: column norms 0.4620, 0.1273, 0.0616, normalised by the largest
    torch.testing.assert_close(
        c.norm(dim=0), torch.tensor([0.46195, 0.12728, 0.06164]), atol=1e-4, rtol=0
    )
    grey = torch.zeros(1, 1, 4, 4)
    torch.testing.assert_close(to_valid_image(grey), torch.full((1, 1, 4, 4), 0.5))


def test_transforms():
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(1, 3, 20, 20)
    padded = pad(3)(t, gen)
    assert padded.shape[-2:] == (26, 26) and torch.all(padded[..., 0, :] == 0.5)
    cropped = jitter(4)(t, gen)
    assert cropped.shape[-2:] == (16, 16)
    assert torch.equal(random_rotate([0])(t, gen), t)
    flipped = random_rotate([180])(t, gen)
    torch.testing.assert_close(flipped, t.flip(-1).flip(-2), atol=1e-5, rtol=0)
    lucid = standard_transforms(128)
    assert padded.shape == pad(3)(t, gen).shape and len(lucid) == 5
    out = torch.rand(1, 3, 128, 128)
    sizes = []
    for tf in lucid:
        out = tf(out, gen)
        sizes.append(out.shape[-1])
    assert sizes[:2] == [128 + 24, 128 + 24 - 8]  # pad 12, jitter 8
    assert all(tf(torch.rand(1, 1, 8, 8), gen).shape[-1] > 0 for tf in standard_transforms(8))


def test_trained_simple_cnn_channel_beats_data_and_noise_and_is_seeded():
    """A zoo simple-cnn trained two epochs on the digits: its most active stage-1 channels."""
    from nettle.models import create_model
    from nettle.train.data import create_dataset, get_dataset_info

    info = get_dataset_info("digits")
    torch.manual_seed(0)
    model = create_model("simple-cnn", in_channels=1, mean=info.mean, std=info.std, width=8)
    x, y = create_dataset("digits").tensors
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for idx in torch.randperm(2 * len(x)).remainder(len(x)).split(64):  # two epochs
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    layer = "net.stage1.1"  # BN after the second conv, 16 x 8 x 8 (before the ReLU, whose zero
    # region would leave a grey start image without gradient)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.85
        data = model.net.stage1[:2](model.net.stem(model.normalize(x))).mean((2, 3))
        noise_x = torch.rand(1000, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        noise = model.net.stage1[:2](model.net.stem(model.normalize(noise_x))).mean((2, 3))
    for c in data.mean(0).argsort(descending=True)[:2].tolist():
        vis = render(model, channel(layer, c), shape=(1, 8, 8), seed=1)  # 512 steps
        assert vis.value > 2.0 * data[:, c].max(), c  # the best of 1,437 training digits
        assert vis.value > 1.5 * noise[:, c].max(), c  # and of 1,000 uniform noise images
        again = render(model, channel(layer, c), shape=(1, 8, 8), seed=1)
        assert torch.equal(vis.image, again.image) and vis.curve == again.curve


def test_redirected_relu_starts_a_channel_that_is_off_for_the_grey_start():
    from nettle.inspect.redirect import redirected_relu

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128, 3),
    )
    with torch.no_grad():  # channel 1 of the last ReLU is off everywhere for a grey image
        assert model[:4](torch.full((1, 1, 8, 8), 0.5))[0, 1].max() < 0
    stuck = render(model, channel("4", 1), shape=(1, 8, 8), steps=200, redirect_relu=False)
    assert stuck.value == 0 and max(stuck.curve) == 0
    vis = render(model, channel("4", 1), shape=(1, 8, 8), steps=200)
    assert vis.value > 0.01 and vis.curve[-1] > 0
    # same outputs; the ordinary gradient wherever it flows; everything restored after
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    (g_plain,) = torch.autograd.grad(model(x).sum(), x)
    with redirected_relu(model):
        assert not model[1].inplace
        y = model(x)
        (g_redirected,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y, model(x))
    torch.testing.assert_close(g_redirected, g_plain)
    assert model[1].inplace and not any(m._forward_hooks for m in model.modules())


def test_class_model_raises_the_class_logit(digits_cnn):
    from nettle.inspect import class_model

    model, x = digits_cnn
    start = torch.full((1, 1, 8, 8), 0.5)
    with torch.no_grad():
        before = model(start)[0]
        best_digit = model(x)[:, 4].max()
    vis = render(
        model,
        class_model(4, l2=0.01),
        shape=(1, 8, 8),
        steps=128,
        lr=0.1,
        param="pixel",
        transforms=[],
        decorrelate=False,
    )
    with torch.no_grad():
        after = model(vis.image[None])[0]
    assert vis.objective == "class_model(4)"
    assert after[4] > before[4] + 5.0 and after[4] > best_digit  # above every digit's logit
    assert after.argmax() == 4
    penalty = 0.01 * float((vis.image - 0.5).pow(2).sum())
    assert vis.value == pytest.approx(float(after[4]) - penalty, rel=1e-5)


def test_class_model_refuses_outputs_that_are_not_logits(digits_cnn):
    from nettle.inspect import class_model

    model, _ = digits_cnn
    with pytest.raises(ValueError, match="class_model needs logits"):
        render(model, class_model(1, output="2"), shape=(1, 8, 8), steps=1, transforms=[])
    with pytest.raises(ValueError, match="l2 must be at least 0"):
        class_model(1, l2=-1)
