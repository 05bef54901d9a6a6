"""Inference copies (BatchNorm folded, channels-last): the same function, model untouched."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from nettle.models import create_model
from nettle.nn.inference import inference_copy


def _trained_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():  # statistics and affine parameters away from their defaults
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("normalised", [False, True])
def test_folded_copy_computes_the_same_function_without_batchnorm(normalised):
    # every run's model starts with input normalisation, whose shape check fx cannot trace
    norm = {"mean": [0.3], "std": [0.4]} if normalised else {}
    model = create_model("simple-cnn", num_classes=10, in_channels=1, **norm)
    model = _trained_bn(model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 8, 8)
    folded = inference_copy(model, x)
    assert folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert model.training  # the model keeps its mode and its tensors
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    # gradients with respect to the input agree too (what attacks use)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    (g1,) = torch.autograd.grad(model(xs[0]).logsumexp(1).sum(), xs[0])
    (g2,) = torch.autograd.grad(folded(xs[1]).logsumexp(1).sum(), xs[1])
    assert torch.allclose(g1, g2, atol=1e-5)


class _Hooked(nn.Module):
    """A conv-BN model whose output passes through a forward hook (invisible to tracing)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)
        self.register_forward_hook(lambda m, i, out: out.sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).flatten(1)


class _Branchy(nn.Module):
    """Data-dependent control flow: cannot be traced."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y if float(y.detach().sum()) > 0 else -y


def test_models_that_cannot_be_folded_faithfully_are_returned_as_they_are():
    x = torch.rand(4, 1, 6, 6)
    hooked = _Hooked()
    assert inference_copy(hooked, x) is hooked  # the copy disagrees: the model itself
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    assert inference_copy(mlp, x) is mlp  # nothing to fold, no convolution


def test_untraceable_models_are_copied_channels_last_with_their_batchnorm():
    x = torch.rand(4, 1, 6, 6)
    branchy = _trained_bn(_Branchy())
    fast = inference_copy(branchy, x)
    assert fast is not branchy and isinstance(fast.bn, nn.BatchNorm2d)
    assert fast.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert branchy.conv.weight.is_contiguous()  # the model keeps its layout
    branchy.eval()
    assert torch.allclose(fast(x), branchy(x), atol=1e-6)


def test_a_model_with_nothing_to_fold_is_copied_only_when_convolutions_dominate():
    x = torch.rand(2, 1, 6, 6)
    convs = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(32, 2))
    fast = inference_copy(convs, x)  # 648 of the 730 parameters are 4-d
    assert fast is not convs and fast[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(x), convs(x), atol=1e-6)
    head_heavy = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 200))
    assert inference_copy(head_heavy, x) is head_heavy  # 18 of 6,620


class _Uncopyable(nn.Sequential):
    """A conv net holding a lock, which deepcopy refuses."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
        self.lock = threading.Lock()


def test_a_model_that_cannot_be_copied_is_evaluated_as_it_is():
    model = _Uncopyable()
    assert inference_copy(model, torch.rand(2, 1, 6, 6)) is model
