"""Inference fast forms: substitutes that rebuild a weight cache it in eval mode, drop or renew
it whenever their state changes, and `fast_form()` is the same map in plain layers."""

import pytest
import torch
from torch import nn

from nettle.nn.substitutes import create_conv
from nettle.nn.substitutes.cache import WeightCache, state_key

REBUILDING = [
    "Hashed_0.3",
    "HashedDecimate",
    "SepHashed_0.3",
    "ACDC_3",
    "OriginalACDC_3",
    "PermutedACDC_3",
    "TensorTrain_0.5",
    "Tucker_0.5",
    "CP_0.5",
    "Shuffle_2",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(spec: str) -> nn.Module:
    torch.manual_seed(0)
    return create_conv(spec, 8, 16, 3, stride=2, padding=1, bias=True)


def _x() -> torch.Tensor:
    return torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(1))


def _caches(layer: nn.Module) -> list[WeightCache]:
    return [m.weight_cache for m in layer.modules() if "weight_cache" in m.__dict__]


@pytest.mark.parametrize("spec", REBUILDING)
def test_eval_without_grad_caches_and_computes_what_training_computes(spec):
    layer, x = _layer(spec), _x()
    expected = layer(x).detach()  # training mode: rebuilt, nothing cached
    assert sum(map(len, _caches(layer))) == 0
    layer.eval()
    with torch.no_grad():
        first, second = layer(x), layer(x)
    caches = _caches(layer)
    assert [len(c) for c in caches] == [2 if spec.startswith("Shuffle") else 1]
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)
    assert torch.equal(first, second)
    layer.train()
    assert len(caches[0]) == 0  # back to training: dropped


@pytest.mark.parametrize("spec", REBUILDING)
def test_an_optimizer_step_in_eval_mode_renews_the_cache(spec):
    layer, x = _layer(spec).eval(), _x()
    with torch.no_grad():
        before = layer(x)
    loss = layer(x).square().sum()  # grad mode: rebuilt, so gradients reach the parameters
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    with torch.no_grad():
        after = layer(x)
        rebuilt = layer.train()(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, rebuilt, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spec", REBUILDING)
def test_load_state_dict_renews_the_cache(spec):
    layer, other, x = _layer(spec).eval(), _layer(spec), _x()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-2)
        want = other(x)  # training mode: rebuilt
        layer(x)  # fills the cache with the old weights
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spec", REBUILDING)
def test_fast_form_is_the_same_map_in_plain_layers(spec):
    layer, x = _layer(spec).eval(), _x()
    fast = layer.fast_form()
    assert isinstance(fast, (nn.Conv2d, nn.Sequential))
    assert all(type(m).__module__.startswith("torch.nn") for m in fast.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), layer(x), rtol=0, atol=1e-5)


def test_a_cache_filled_in_inference_mode_serves_an_attack_on_a_frozen_layer():
    layer, x = _layer("HashedDecimate").eval(), _x()
    layer.requires_grad_(False)
    with torch.inference_mode():
        layer(x)
    x.requires_grad_(True)
    layer(x).sum().backward()  # the cached kernel is saved for backward: a normal tensor
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_key_follows_in_place_updates_and_moves():
    layer = nn.Linear(2, 2)
    key = state_key(layer)
    assert state_key(layer) == key
    with torch.no_grad():
        layer.weight.add_(1)
    assert state_key(layer) != key
    key = state_key(layer)
    assert state_key(layer.double()) != key
