import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.inspect import (
    FieldTracer,
    Rect,
    UntraceableError,
    augmentation_effect,
    paste_patch,
    patch_sensitivity,
    patch_transfer_effect,
    receptive_field,
    top_patches,
)
from nettle.inspect.probes import layer_output

pytestmark = pytest.mark.usefixtures("one_thread")


class Residual(nn.Module):
    """conv-act-dilated conv plus a shortcut (1x1 strided conv or identity), added."""

    def __init__(self, c: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, stride, 1)
        self.b = nn.Conv2d(c, c, 3, 1, 2, dilation=2)
        self.act = act()
        self.short = nn.Conv2d(c, c, 1, stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        return self.b(self.act(self.a(x))) + self.short(x)


def _out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _random_stack(seed: int, act, size: int = 36) -> nn.Sequential:
    """Random convs (k 1-5, stride 1-2, padding < k, dilation 1-2) and pools, one residual."""
    rng = random.Random(seed)
    layers, c, n, res_at = [], 1, size, rng.randrange(4)
    while len(layers) < 6:
        if rng.random() < 0.35:
            k, s, d = rng.randint(2, 3), rng.randint(1, 2), rng.randint(1, 2)
            p = rng.randint(0, k // 2)
            if _out(n, k, s, p, d) < 3:
                continue
            max_pool = rng.random() < 0.5
            layers.append(nn.MaxPool2d(k, s, p, dilation=d) if max_pool else nn.AvgPool2d(k, s, p))
            n = _out(n, k, s, p, d if max_pool else 1)
        else:
            k, co, s, d = rng.randint(1, 5), rng.randint(2, 4), rng.randint(1, 2), rng.randint(1, 2)
            p = rng.randint(0, k - 1)
            if _out(n, k, s, p, d) < 3:
                continue
            bn = nn.BatchNorm2d(co)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            layers += [nn.Conv2d(c, co, k, s, p, d), bn, act()]
            c, n = co, _out(n, k, s, p, d)
        if len(layers) > res_at and not any(isinstance(m, Residual) for m in layers):
            stride = rng.randint(1, 2) if n > 6 else 1
            layers.append(Residual(c, stride, act))
            n = _out(n, 1, stride, 0)
    return nn.Sequential(*layers).eval()


def _gradient_support(model, layer, position, input_size, n, channel=0):
    """Pixels with a nonzero input gradient of the activation, for any of n random inputs."""
    torch.manual_seed(1)
    x = torch.randn(n, *input_size, requires_grad=True)
    a = layer_output(model, layer, x, grad=True)[(slice(None), channel, *position)]
    (g,) = torch.autograd.grad(a.sum(), x)
    return (g != 0).flatten(0, 1).any(0)


def _box(support: torch.Tensor) -> Rect:
    rows, cols = support.nonzero(as_tuple=True)
    return Rect(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


def _check_exact(seed: int) -> None:
    torch.manual_seed(seed)
    model = _random_stack(seed, lambda: nn.LeakyReLU(0.1))
    tracer = FieldTracer(model, (1, 36, 36))
    rng = random.Random(seed)
    for name, _ in model.named_children():
        h, w = tracer.output_shape(name)[2:]
        pos = (rng.randrange(h), rng.randrange(w))
        rect = tracer.rect(name, pos)
        support = _gradient_support(model, name, pos, (1, 36, 36), n=32)
        outside = support.clone()
        rect.crop(outside).fill_(False)
        assert not outside.any(), (name, pos, rect)  # zero gradient outside the rectangle
        assert _box(support) == rect, (name, pos)  # tight: every border row/column is used


@pytest.mark.parametrize("seed", range(8))
def test_random_stacks_trace_the_exact_rectangle(seed):
    _check_exact(seed)


@pytest.mark.slow
def test_random_stacks_trace_the_exact_rectangle_many_seeds():
    for seed in range(8, 60):
        _check_exact(seed)


@pytest.mark.parametrize("seed", range(2))
def test_relu_stacks_have_zero_gradient_outside(seed):
    torch.manual_seed(seed)
    model = _random_stack(seed + 10, nn.ReLU)
    name = list(dict(model.named_children()))[-1]
    tracer = FieldTracer(model, (1, 36, 36))
    h, w = tracer.output_shape(name)[2:]
    for pos in [(0, 0), (h // 2, w // 2), (h - 1, w - 1)]:
        support = _gradient_support(model, name, pos, (1, 36, 36), n=4)
        tracer.rect(name, pos).crop(support).fill_(False)
        assert not support.any()


def test_hand_computed_fields():
    same = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1))
    assert receptive_field(same, "1", 0, 0, (1, 8, 8)) == Rect(0, 0, 3, 3)  # clipped
    assert receptive_field(same, "1", 4, 4, (1, 8, 8)) == Rect(2, 2, 7, 7)
    strided = nn.Sequential(nn.Conv2d(1, 1, 3, 2), nn.ReLU(), nn.Conv2d(1, 1, 3, 2))
    # size 1 + 2 + 2*2 = 7, stride 4: output (1, 1) reads rows 2..4, then 4..10
    assert receptive_field(strided, "2", 1, 1, (1, 15, 15)) == Rect(4, 4, 11, 11)
    pooled = nn.Sequential(nn.Conv2d(1, 1, 5), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, dilation=2))
    # conv 3x3 dilated 2 reads 0, 2, 4 -> pool rows 0..9 -> conv5 rows 0..13
    assert receptive_field(pooled, "2", 0, 1, (1, 20, 20)) == Rect(0, 2, 14, 16)
    rect = receptive_field(
        nn.Sequential(nn.Conv1d(1, 1, 3, 2), nn.Conv1d(1, 1, 2)), "1", 0, 3, (1, 20)
    )
    assert rect == Rect(0, 6, 1, 11)


class Functional(nn.Module):
    """Residual add, channel concatenation and functional pooling, all through torch.fx."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(2, 3, 5, padding=2, padding_mode="zeros")
        self.head = nn.Conv2d(6, 2, 3, stride=2)

    def forward(self, x):
        y = torch.cat([F.leaky_relu(self.c1(x), 0.1), self.c2(x) * 0.5], dim=1)
        return self.head(F.max_pool2d(y, 2, 1)) + 1.0


def test_functional_graph_matches_the_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(Functional(), nn.Conv2d(2, 2, 3, padding="same")).eval()
    tracer = FieldTracer(model, (2, 21, 21))
    for layer, pos in [("0", (3, 4)), ("1", (0, 8)), ("0.head", (4, 4)), ("0.c2", (20, 0))]:
        support = _gradient_support(model, layer, pos, (2, 21, 21), n=8)
        assert _box(support) == tracer.rect(layer, pos), layer


class Flip(nn.Module):
    def forward(self, x):
        return torch.flip(x, [-1])


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_layers_are_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 4))
    with pytest.raises(UntraceableError, match="layer '2' \\(Linear\\) has no spatial output"):
        receptive_field(model, "2", 0, 0, (1, 8, 8))
    model = nn.Sequential(
        nn.Conv2d(1, 1, 1),
        nn.Flatten(),
        nn.Linear(64, 64),
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 1, 3),
    )
    with pytest.raises(UntraceableError, match="layer '3' \\(Unflatten\\)"):
        receptive_field(model, "4", 0, 0, (1, 8, 8))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.Conv2d(2, 2, 1))
    with pytest.raises(UntraceableError, match="layer '1' \\(AdaptiveAvgPool2d\\)"):
        receptive_field(model, "2", 0, 0, (1, 8, 8))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Flip(), nn.Conv2d(2, 2, 1))
    with pytest.raises(UntraceableError, match="'flip' in layer '1'"):
        receptive_field(model, "2", 0, 0, (1, 8, 8))
    with pytest.raises(UntraceableError, match="layer '1' \\(Branchy\\)"):
        receptive_field(nn.Sequential(nn.Conv2d(1, 2, 3), Branchy()), "1", 0, 0, (1, 8, 8))
    with pytest.raises(UntraceableError, match="padding_mode 'reflect'"):
        receptive_field(
            nn.Sequential(nn.Conv2d(1, 1, 3, padding_mode="reflect", padding=1)),
            "0",
            0,
            0,
            (1, 8, 8),
        )
    with pytest.raises(ValueError, match="did you mean 0"):
        receptive_field(model, "00", 0, 0, (1, 8, 8))
    with pytest.raises(ValueError, match="fails on inputs of size \\(1, 2, 2\\)"):
        receptive_field(model, "0", 0, 0, (1, 2, 2))
    with pytest.raises(ValueError, match="outside layer '0'"):
        receptive_field(model, "0", 6, 0, (1, 8, 8))


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4, 3),
    )


def test_top_patches_equal_brute_force_crops():
    model, x = _cnn(), torch.rand(60, 1, 12, 12)
    model[1].running_mean.fill_(0.1)
    stats = [model[1].running_mean.clone(), model.training]
    got = top_patches(model, (x, torch.zeros(60)), "4", channel=1, k=5, batch_size=7)
    with torch.no_grad():
        a = model.eval()[:5](x)[:, 1].flatten(1)
    model.train()
    values, order = a.max(1).values.sort(descending=True, stable=True)
    assert got.indices == order[:5].tolist()
    torch.testing.assert_close(torch.tensor(got.values), values[:5])
    tracer = FieldTracer(model, (1, 12, 12))
    for i, pos, rect, patch in zip(got.indices, got.positions, got.rects, got.patches):
        assert a[i].view(4, 4)[pos] == a[i].max()
        assert rect == tracer.rect("4", pos) and (rect.height, rect.width) == tuple(
            8 - (p in (0, 3)) for p in pos
        )
        assert torch.equal(patch, x[i, :, rect.top : rect.bottom, rect.left : rect.right])
    torch.testing.assert_close(model[1].running_mean, stats[0])  # tracing ran in eval mode
    assert model.training and not any(m._forward_hooks for m in model.modules())


def test_patch_sensitivity_and_transfer():
    model = _cnn()
    torch.manual_seed(3)
    src, dst = torch.rand(1, 12, 12), torch.rand(1, 12, 12)
    s = patch_sensitivity(model, "4", 2, src)
    assert s.outside == 0.0 and s.gradient.abs().sum() > 0
    assert torch.equal(s.patch_gradient, s.rect.crop(s.gradient))
    assert all(p.grad is None for p in model.parameters())
    t = patch_transfer_effect(model, "4", 2, src, dst, position=s.position)
    assert t.rect == s.rect and t.at == (s.rect.top, s.rect.left)
    # the pasted image holds the whole receptive field of src: same activation
    assert t.after == pytest.approx(t.src_value, abs=1e-5) and t.src_value == pytest.approx(s.value)
    assert torch.equal(t.image[:, :, : s.rect.left], dst[:, :, : s.rect.left])
    moved = patch_transfer_effect(model, "4", 2, src, dst, rect=Rect(0, 0, 4, 4), at=(8, 8))
    assert torch.equal(moved.image[:, 8:, 8:], src[:, :4, :4])
    with pytest.raises(ValueError, match="leaves 12x12"):
        paste_patch(src, Rect(0, 0, 5, 5), dst, at=(9, 0))


def test_augmentation_effect():
    model, x = _cnn(), torch.rand(1, 12, 12)
    same = augmentation_effect(model, "2", x, lambda t: t)
    assert same.relative_change == 0.0 and same.before.shape == (4, 12, 12)
    flipped = augmentation_effect(model, "2", x, lambda t: t.flip(-1))
    assert flipped.relative_change > 0.1
    torch.testing.assert_close(flipped.difference, flipped.after - flipped.before)
    with pytest.raises(ValueError, match="from \\(4, 12, 12\\) to \\(4, 14, 14\\)"):
        augmentation_effect(model, "2", x, lambda t: F.pad(t, [1, 1, 1, 1], value=1.0))


class SharedReLU(nn.Module):
    """One ReLU module used twice, as in torchvision's BasicBlock."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.relu = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5), nn.ReLU()

    def forward(self, x):
        return self.relu(self.c2(self.relu(self.c1(x))))


def test_a_shared_module_is_traced_at_its_first_call():
    assert receptive_field(SharedReLU(), "relu", 2, 2, (1, 12, 12)) == Rect(2, 2, 5, 5)


def test_torchvision_resnet18_fields_match_the_gradient():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    tracer = FieldTracer(model, (3, 64, 64))
    for layer, pos in [("layer1.1", (9, 2)), ("layer2.0.conv1", (3, 5)), ("layer2.1", (7, 0))]:
        support = _gradient_support(model, layer, pos, (3, 64, 64), n=32)
        assert _box(support) == tracer.rect(layer, pos), layer
