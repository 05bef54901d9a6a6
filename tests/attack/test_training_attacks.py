"""Adversarial training draws its examples from the one PGD: equal to the papers' loops."""

import torch
import torch.nn.functional as F
from torch import nn

from nettle.config import AdversarialConfig
from nettle.measure.timing import PhaseTimer
from nettle.train.adversarial import create_adversarial


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ).train()


def _grad(model, x, y):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return g


def _madry_loop(model, x, y, gen, eps, alpha, steps):
    """Madry et al.'s loop: uniform start, signed steps, clip to the ball then the range,
    in eval mode."""
    model.eval()
    u = torch.rand(x.shape, generator=gen)
    adv = (x + (2 * u - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        g = _grad(model, adv, y)
        adv = (x + (adv + alpha * g.sign() - x).clamp(-eps, eps)).clamp(0, 1).detach()
    model.train()
    return adv


def _wong_loop(model, x, y, gen, eps, alpha):
    """Wong et al.'s fast FGSM: start clipped to the range, gradient in training mode."""
    delta = (2 * torch.rand(x.shape, generator=gen) - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    g = _grad(model, x + delta, y)
    delta = (delta + alpha * g.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)


def _captured(mode: str, model, batches):
    obj = create_adversarial(AdversarialConfig(mode=mode, eps=0.1, steps=3))
    seen = []
    real = obj._train_on
    obj._train_on = lambda m, adv, y, timer: seen.append(adv) or real(m, adv, y, timer)
    for x, y in batches:
        obj(model, x, y, PhaseTimer())
    return seen


def _batches():
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        x = torch.rand(16, 1, 6, 6, generator=g)
        out.append((torch.where(x < 0.3, 0.0, x), torch.randint(0, 3, (16,), generator=g)))
    return out  # many pixels at the range's lower edge


def test_madry_training_examples_equal_the_papers_loop_bitwise():
    batches = _batches()
    ours = _captured("madry", _model(), batches)
    model, gen = _model(), torch.Generator().manual_seed(7)  # the objective's seed + 7
    for (x, y), adv in zip(batches, ours, strict=True):
        expected = _madry_loop(model, x, y, gen, 0.1, 0.025, 3)
        assert torch.equal(adv, expected)
        F.cross_entropy(model(expected), y)  # the training forward moves batch norm alike


def test_fast_training_examples_follow_wong_et_al():
    batches = _batches()
    ours = _captured("fast", _model(), batches)
    model, gen = _model(), torch.Generator().manual_seed(7)
    for (x, y), adv in zip(batches, ours, strict=True):
        expected = _wong_loop(model, x, y, gen, 0.1, 0.125)
        assert (adv - expected).abs().max().item() <= 1e-6  # x + (adv - x) rounding only
        F.cross_entropy(model(expected), y)
