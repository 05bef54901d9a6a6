import pytest
import torch
import torchvision
from torch import nn

import nettle.nn.substitutes.base as subs
from nettle.models import create_model, list_models
from nettle.registry import UnknownNameError


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("wrn-28-10", {}, 36_479_194),  # Zagoruyko & Komodakis; Gray et al. count.py
        ("resnet18", {"num_classes": 1000}, 11_689_512),
        ("resnet34", {"num_classes": 1000}, 21_797_672),
        ("resnet50", {"num_classes": 1000}, 25_557_032),
        ("wrn-50-2", {"num_classes": 1000}, 68_883_240),
        ("vgg16", {"num_classes": 1000, "head": "imagenet", "batch_norm": False}, 138_357_544),
    ],
)
def test_published_parameter_counts(name, kwargs, expected):
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    assert _params(model) == expected


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("resnet50", torchvision.models.resnet50),
        ("wrn-50-2", torchvision.models.wide_resnet50_2),
        ("vgg11", lambda: torchvision.models.vgg11()),
    ],
)
def test_parameter_shapes_match_torchvision(name, reference):
    kwargs = {"num_classes": 1000}
    if name.startswith("vgg"):
        kwargs.update(head="imagenet", batch_norm=False)
    with torch.device("meta"):
        ours, theirs = create_model(name, **kwargs), reference()
    assert sorted(p.shape for p in ours.parameters()) == sorted(
        p.shape for p in theirs.parameters()
    )


def _wrn_params(depth: int, k: int, classes: int = 10) -> int:
    """Hand count of a CIFAR WRN: stem, blocks (2 BN + 2 conv3x3 + shortcut), final BN, FC."""
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = 3 * 16 * 9
    for g in (1, 2, 3):
        for i in range(n):
            c_in = widths[g - 1] if i == 0 else widths[g]
            c = widths[g]
            total += 2 * c_in + c_in * c * 9 + 2 * c + c * c * 9
            if c_in != c:
                total += c_in * c
    return total + 2 * widths[3] + widths[3] * classes + classes


@pytest.mark.parametrize(("depth", "k"), [(16, 4), (40, 2), (28, 10), (10, 1)])
def test_wrn_counts_by_hand(depth, k):
    with torch.device("meta"):
        assert _params(create_model(f"wrn-{depth}-{k}")) == _wrn_params(depth, k)


SMALL = ["simple-cnn", "wrn-16-2", "vgg11", "resnet18", "darts"]


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_invariants(name):
    torch.manual_seed(0)
    kwargs = {"channels": 8, "layers": 5, "conv": "Conv"} if name == "darts" else {}
    model = create_model(name, num_classes=7, in_channels=3, **kwargs)
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    names = dict(model.named_modules())
    assert model.at_layers and all(n in names for n in model.at_layers)


@pytest.mark.parametrize("name", ["simple-cnn", "wrn-10-1", "vgg11"])
def test_one_channel_and_normalize(name):
    model = create_model(name, num_classes=3, in_channels=1, mean=[0.5], std=[0.25]).eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model(x), model.net((x - 0.5) / 0.25))
    assert model.at_layers[0].startswith("net.")


def test_conv_hook_is_used_exactly_where_the_reference_substitutes(monkeypatch):
    calls = []
    real = subs.get_conv_class

    def recording(spec):
        factory = real(None)

        def build(c_in, c_out, k, **kw):
            if spec == "Probe":
                calls.append((c_in, c_out, k, kw.get("stride", 1)))
            return factory(c_in, c_out, k, **kw)

        return build if spec == "Probe" else real(spec)

    for module in ("wrn", "resnet", "vgg", "simple_cnn"):
        monkeypatch.setattr(f"nettle.models.{module}.get_conv_class", recording)
    with torch.device("meta"):
        create_model("wrn-28-10", conv="Probe")
        assert len(calls) == 24 and all(k == 3 for _, _, k, _ in calls)  # 24 3x3 block convs
        calls.clear()
        create_model("wrn-50-2", conv="Probe")
        assert len(calls) == 16 * 3 + 4  # every bottleneck conv + 4 downsample shortcuts
        calls.clear()
        create_model("vgg16", conv="Probe")
        assert len(calls) == 12  # 13 convs but the first
        calls.clear()
        create_model("simple-cnn", conv="Probe")
        assert len(calls) == 2


def test_conv_spec_conv_equals_default():
    with torch.device("meta"):
        assert _params(create_model("wrn-16-4", conv="Conv")) == _params(create_model("wrn-16-4"))


def test_errors_name_the_problem():
    with pytest.raises(
        UnknownNameError, match=r"unknown model 'resnet9'; known: .*wrn-<depth>-<width>"
    ):
        create_model("resnet9")
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("wrn-27-10")
    with pytest.raises(ValueError, match="takes no argument 'dropot'; its options: dropout"):
        create_model("wrn-16-4", dropot=0.3)
    with pytest.raises(ValueError, match="head must be"):
        create_model("vgg11", head="tiny")
    with pytest.raises(ValueError, match="both mean and std"):
        create_model("simple-cnn", mean=[0.5])
    assert "simple-cnn" in list_models()
