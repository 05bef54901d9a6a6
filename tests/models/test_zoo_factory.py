"""The factory's argument checks, in-model normalisation, and the small CNN on the digits."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from nettle.measure.formulas import OpCount, get_formula
from nettle.models import create_model
from nettle.nn.normalize import Normalize, normalize

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match=r"6n \+ 4 .* got 27"):
        create_model("wrn-27-10")
    with pytest.raises(ValueError, match="takes no argument 'dropot'; its options: dropout"):
        create_model("wrn-16-4", dropot=0.3)
    with pytest.raises(ValueError, match="'depth' by its name"):
        create_model("wrn-16-4", depth=10)
    with pytest.raises(ValueError, match="head must be 'cifar' or 'imagenet', got 'tiny'"):
        create_model("vgg11", head="tiny")
    with pytest.raises(ValueError, match="both mean and std"):
        create_model("simple-cnn", mean=[0.5])
    with pytest.raises(ValueError, match="mean has 1 values but the model has 3 channels"):
        create_model("simple-cnn", mean=[0.5], std=[0.2])


def test_names_are_case_insensitive():
    with torch.device("meta"):
        assert type(create_model("WRN-16-2")).__name__ == "WideResNet"
        assert type(create_model(" ResNet18 ")).__name__ == "ResNet"


def test_normalize_buffers_values_and_cost():
    norm = Normalize([0.5, 0.25], [0.5, 2.0])
    assert list(norm.parameters()) == []
    assert sorted(n for n, _ in norm.named_buffers()) == ["mean", "std"]
    x = torch.tensor([1.0, 0.25]).view(1, 2, 1, 1).expand(3, 2, 4, 4)
    y = norm(x)
    torch.testing.assert_close(y[:, 0], torch.ones(3, 4, 4))
    torch.testing.assert_close(y[:, 1], torch.zeros(3, 4, 4))
    torch.testing.assert_close(normalize(x, norm.mean, norm.std), y)
    assert get_formula(norm)(norm, (x,), y) == OpCount(elementwise=2 * 96)
    with pytest.raises(ValueError, match="expects 2 channels"):
        norm(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.0], [0.0])


@pytest.mark.parametrize("name", ["simple-cnn", "wrn-10-1"])
def test_normalisation_inside_the_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_channels=1, mean=[0.5], std=[0.25]).eval()
    plain = create_model(name, num_classes=3, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model(x), model.net((x - 0.5) / 0.25))
    assert isinstance(model[0], Normalize)
    assert model.at_layers == [f"net.{n}" for n in plain.at_layers]
    modules = dict(model.named_modules())
    assert all(n in modules for n in model.at_layers)


def test_simple_cnn_learns_the_digits():
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=gen)
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = create_model("simple-cnn", in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        model.train()
        for batch in train[torch.randperm(len(train), generator=gen)].split(64):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(x[test]).argmax(1) == y[test]).float().mean().item()
    assert len(test) == 397 and accuracy >= 0.95


def test_init_follows_the_references():
    torch.manual_seed(0)
    wrn = create_model("wrn-10-4")
    w = wrn.block3[0].conv2.weight  # 256 -> 256, 3x3: std sqrt(2 / (9 * 256))
    assert abs(w.std().item() / (2 / (9 * 256)) ** 0.5 - 1) < 0.01
    assert all(
        (m.weight == 1).all() and (m.bias == 0).all()
        for m in wrn.modules()
        if isinstance(m, nn.BatchNorm2d)
    )
    assert (wrn.fc.bias == 0).all()
