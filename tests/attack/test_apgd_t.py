"""APGD-T against the reference code (pyautoattack) on the trained CNN of conftest.py, and its
target choice by hand."""

import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack_targeted
from torch import nn

from nettle.attack import create_attack
from nettle.attack.apgd_t import top_targets


def _correct(model, x, y, n):
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:n], y[keep][:n]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 0.9)])
def test_equals_the_reference(trained, norm, eps):
    model, x, y = trained
    x, y = _correct(model, x, y, 64)  # the reference attacks the correctly classified only
    ours = create_attack("apgd-t", model, seed=0, eps=eps, norm=norm, steps=20, targets=3)(x, y)
    reference = APGDAttack_targeted(
        model,
        n_iter=20,
        norm={"linf": "Linf", "l2": "L2"}[norm],
        eps=eps,
        seed=0,
        n_target_classes=3,
        device="cpu",
    )
    theirs = reference.perturb(x, y)
    with torch.no_grad():
        theirs_fooled = model(theirs).argmax(1) != y
    assert 0.1 < ours.success_rate < 0.9  # mid-range: a comparison that can fail
    # the same random starts (same seed, same draw order) and steps: the same examples fall
    assert (ours.success != theirs_fooled).sum().item() <= 1
    both = ours.success & theirs_fooled
    assert (ours.x_adv[both] - theirs[both]).abs().max().item() <= 1e-4
    bound = ours.linf if norm == "linf" else ours.l2
    assert bound.max().item() <= eps + 1e-6


def test_targets_in_order_of_the_clean_logits():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
    assert top_targets(logits, 2).tolist() == [1, 1]  # runner-up
    assert top_targets(logits, 3).tolist() == [2, 3]
    assert top_targets(logits, 4).tolist() == [3, 0]


def test_later_targets_only_on_survivors_and_clamped_to_the_classes(trained):
    model, x, y = trained
    x, y = _correct(model, x, y, 64)
    result = create_attack("apgd-t", model, seed=0, eps=0.15, steps=10, targets=9)(x, y)
    assert result.extras["targets"] == 3  # 4 classes: every other class once
    assert 0 < result.success_rate < 1
    # the first target runs on all 64, each later one only on those not fooled yet
    assert 11 * 64 < result.extras["gradients"] < 3 * 11 * 64
    failed = ~result.success
    assert torch.equal(result.x_adv[failed], x[failed])  # as the reference: the input back


def test_needs_four_classes_and_refuses_user_targets(trained):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="at least 4 classes"):
        create_attack("apgd-t", model)(x, y)
    with pytest.raises(ValueError, match="APGDT has no targeted mode"):
        create_attack("apgd-t", trained[0])(x, y, target=y)
    with pytest.raises(ValueError, match="targets >= 1"):
        create_attack("apgd-t", model, targets=0)
