"""The zoo: published parameter counts, torchvision as a second oracle, hand counts, the
invariants of every registered model, and where the substitution hook is used."""

import pytest
import torch
import torchvision
from torch import nn

from nettle.models import create_model, list_models
from nettle.registry import UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


# --------------------------------------------------------------------------- published counts
@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("wrn-28-10", {}, 36_479_194),  # Zagoruyko & Komodakis; Gray et al. count.py
        ("wrn-40-2", {}, 2_243_546),  # Gray et al.: 2.24355E+06
        ("resnet18", {"num_classes": 1000}, 11_689_512),
        ("resnet34", {"num_classes": 1000}, 21_797_672),
        ("resnet50", {"num_classes": 1000}, 25_557_032),
        ("wrn-50-2", {"num_classes": 1000}, 68_883_240),
        ("vgg16", {"num_classes": 1000, "head": "imagenet"}, 138_357_544),
        ("wrn-28-10", {"conv": "Sep"}, 4_380_138),  # Gray et al. section 3.1
        ("wrn-28-10", {"conv": "Generic_0.03"}, 601_162),
        ("wrn-28-10", {"conv": "Shuffle_4"}, 823_674),
    ],
)
def test_published_parameter_counts(name, kwargs, expected):
    assert _params(_meta(name, **kwargs)) == expected


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("resnet18", {}, torchvision.models.resnet18),
        ("resnet34", {}, torchvision.models.resnet34),
        ("resnet50", {}, torchvision.models.resnet50),
        ("wrn-50-2", {}, torchvision.models.wide_resnet50_2),
        ("vgg16", {"head": "imagenet"}, torchvision.models.vgg16),
        ("vgg19", {"head": "imagenet"}, torchvision.models.vgg19),
    ],
)
def test_same_state_dict_layout_as_torchvision(name, kwargs, reference):
    ours = _meta(name, num_classes=1000, **kwargs)
    with torch.device("meta"):
        theirs = reference()
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert _params(ours) == _params(theirs)


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


@pytest.mark.parametrize(("depth", "k"), [(16, 4), (40, 2), (28, 10), (10, 1), (22, 3)])
def test_wrn_counts_by_hand(depth, k):
    assert _params(_meta(f"wrn-{depth}-{k}")) == _wrn_params(depth, k)


def test_wrn_16_4_and_simple_cnn_counts():
    # WRN-16-4: n = 2 blocks per group, widths 16/64/128/256.
    stem = 3 * 16 * 9
    group1 = (2 * 16 + 16 * 64 * 9 + 2 * 64 + 64 * 64 * 9 + 16 * 64) + (4 * 64 + 2 * 64 * 64 * 9)
    group2 = (2 * 64 + 64 * 128 * 9 + 2 * 128 + 128 * 128 * 9 + 64 * 128) + (
        4 * 128 + 2 * 128 * 128 * 9
    )
    group3 = (2 * 128 + 128 * 256 * 9 + 2 * 256 + 256 * 256 * 9 + 128 * 256) + (
        4 * 256 + 2 * 256 * 256 * 9
    )
    head = 2 * 256 + 256 * 10 + 10
    assert stem + group1 + group2 + group3 + head == 2_748_890
    assert _params(_meta("wrn-16-4")) == 2_748_890
    # simple-cnn, one channel: convs 1-32-64-128 (3x3, no bias), 3 BNs, Linear 128 -> 10.
    hand = 9 * (1 * 32 + 32 * 64 + 64 * 128) + 2 * (32 + 64 + 128) + 128 * 10 + 10
    assert hand == 94_186
    assert _params(_meta("simple-cnn", in_channels=1)) == hand


# --------------------------------------------------------------------- every registered model
# name in list_models() -> (a concrete name, extra kwargs, input height/width of a batch of one;
# the ImageNet networks get 64x64 so that their last stage still has 2x2 values per channel for BN)
CASES = {
    "attention-ocr": ("attention-ocr", {}, 8),
    "bayes-lenet": ("bayes-lenet", {}, 28),
    "crnn": ("crnn", {}, 8),
    "darts": ("darts", {"channels": 8, "layers": 5}, 32),
    "resnet18": ("resnet18", {}, 64),
    "resnet34": ("resnet34", {}, 64),
    "resnet50": ("resnet50", {}, 64),
    "simple-cnn": ("simple-cnn", {}, 8),
    "tiny-yolo": ("tiny-yolo", {}, 32),
    "vgg11": ("vgg11", {}, 32),
    "vgg13": ("vgg13", {}, 32),
    "vgg16": ("vgg16", {}, 32),
    "vgg19": ("vgg19", {}, 32),
    "wrn-50-2": ("wrn-50-2", {}, 64),
    "wrn-<depth>-<width>": ("wrn-16-2", {"dropout": 0.1}, 32),
}
NAMES = sorted(CASES)


def _out_shape(name: str, n: int, classes: int, size: int) -> tuple[int, ...]:
    """(N, classes); the CRNN scores every column pair: (N, classes + blank, width // 2); the
    attention recogniser its 9 decoding steps (N, classes + end, 9); the detector every 4x4
    cell (N, 5 + classes, size // 4, size // 4)."""
    if name == "crnn":
        return (n, classes + 1, size // 2)
    if name == "attention-ocr":
        return (n, classes + 1, 9)
    if name == "tiny-yolo":
        return (n, 5 + classes, size // 4, size // 4)
    return (n, classes)


def test_every_registered_model_has_a_case():
    assert list_models() == NAMES


def _build(name: str) -> nn.Module:
    """The case's model with real weights, built afresh: a test's model and its gradients are
    freed when the test ends (the ImageNet networks and VGGs hold hundreds of MB each)."""
    concrete, kwargs, _ = CASES[name]
    torch.manual_seed(0)
    return create_model(concrete, num_classes=7, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_invariants(name):
    model = _build(name).train()
    size = CASES[name][2]
    model.zero_grad(set_to_none=True)
    out = model(torch.rand(1, 3, size, size))
    assert out.shape == _out_shape(name, 1, 7, size)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    names = dict(model.named_modules())
    assert model.at_layers and [n for n in model.at_layers if n not in names] == []


@pytest.mark.parametrize("name", NAMES)
def test_one_input_channel(name):
    concrete, kwargs, size = CASES[name]
    model = _meta(concrete, num_classes=5, in_channels=1, **kwargs)
    with torch.device("meta"):
        assert model(torch.rand(2, 1, size, size)).shape == _out_shape(name, 2, 5, size)


@pytest.mark.parametrize("name", NAMES)
def test_conv_spec_conv_builds_the_dense_network(name):
    concrete, kwargs, _ = CASES[name]
    if name == "bayes-lenet":  # compressed by its own Bayesian layers, not by substitutes
        with pytest.raises(ValueError, match="no conv= substitute"):
            _meta(concrete, conv="Conv")
        return
    dense = "Sep" if name == "darts" else None  # DARTS's reference network is separable
    assert _params(_meta(concrete, conv=dense, **kwargs)) == _params(
        _meta(concrete, conv="Conv" if dense is None else "Sep", **kwargs)
    )
    if dense is None:
        assert _params(_meta(concrete, conv="Sep", **kwargs)) < _params(_meta(concrete, **kwargs))


@pytest.mark.parametrize("name", NAMES)
def test_unexpected_keyword_is_named(name):
    with pytest.raises(ValueError, match=r"takes no argument 'colour_depth'; its options"):
        create_model(CASES[name][0], colour_depth=8)


def test_unknown_name_lists_the_known_names():
    with pytest.raises(UnknownNameError) as err:
        create_model("resnet9")
    assert str(err.value) == f"unknown model 'resnet9'; known: {', '.join(list_models())}"
    assert "wrn-<depth>-<width>" in str(err.value)


# ------------------------------------------------------------------------ attention points
def _at_shapes(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    modules = dict(model.named_modules())
    seen: list[tuple[int, ...]] = []
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
        for n in model.at_layers
    ]
    with torch.device("meta"):
        model(torch.rand(shape))
    for h in hooks:
        h.remove()
    return seen


def test_attention_points_of_the_reference_networks():
    wrn = _meta("wrn-28-10")
    assert wrn.at_layers == ["block1", "block2", "block3"]
    assert _at_shapes(wrn, (1, 3, 32, 32)) == [(1, 160, 32, 32), (1, 320, 16, 16), (1, 640, 8, 8)]
    wrn50 = _meta("wrn-50-2", num_classes=1000)
    assert wrn50.at_layers == ["layer1", "layer2", "layer3", "layer4"]
    assert _at_shapes(wrn50, (1, 3, 224, 224)) == [
        (1, 256, 56, 56),
        (1, 512, 28, 28),
        (1, 1024, 14, 14),
        (1, 2048, 7, 7),
    ]
    vgg = _meta("vgg16")
    assert [s[1:] for s in _at_shapes(vgg, (1, 3, 32, 32))] == [
        (64, 16, 16),
        (128, 8, 8),
        (256, 4, 4),
        (512, 2, 2),
        (512, 1, 1),
    ]
    assert _at_shapes(_meta("simple-cnn", in_channels=1), (1, 1, 8, 8)) == [
        (1, 64, 4, 4),
        (1, 128, 4, 4),
    ]


def test_vgg_heads():
    imagenet = _meta("vgg16", num_classes=1000, head="imagenet")
    with torch.device("meta"):
        assert imagenet(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in imagenet.modules())
    cifar = _meta("vgg16")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in cifar.modules()) == 13
    assert isinstance(cifar.classifier, nn.Linear) and cifar.classifier.in_features == 512
    # CIFAR VGG-16: 13 convs (+ BN) and one Linear 512 -> 10.
    convs = [(3, 64), (64, 64), (64, 128), (128, 128)] + [(128, 256)] + [(256, 256)] * 2
    convs += [(256, 512)] + [(512, 512)] * 5
    assert _params(cifar) == sum(9 * a * b + 2 * b for a, b in convs) + 512 * 10 + 10
