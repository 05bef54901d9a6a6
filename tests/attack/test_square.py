"""Square against the reference code (pyautoattack) on the trained CNN of conftest.py, and its
schedule by hand."""

import pytest
import torch
from pyautoattack.square import SquareAttack

from nettle.attack import create_attack
from nettle.attack.square import SquareConfig, square_size


def _correct(model, x, y, n):
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:n], y[keep][:n]


def _reference(model, x, y, norm, eps, queries):
    attack = SquareAttack(
        model,
        norm={"linf": "Linf", "l2": "L2"}[norm],
        eps=eps,
        n_queries=queries,
        p_init=0.8,
        seed=0,
        resc_schedule=False,
        device="cpu",
    )
    adv = attack.perturb(x, y)
    with torch.no_grad():
        return adv, model(adv).argmax(1) != y


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0)])
def test_same_proposals_as_the_reference(trained, norm, eps):
    model, x, y = trained
    x, y = _correct(model, x, y, 64)
    ours = create_attack("square", model, seed=0, eps=eps, norm=norm, queries=80)(x, y)
    theirs, theirs_fooled = _reference(model, x, y, norm, eps, 80)
    assert 0.03 < ours.success_rate < 0.9  # a comparison that can fail
    # the same seed and draw order: the same windows and signs, so the same points
    assert (ours.success != theirs_fooled).sum().item() <= 1
    both = ours.success & theirs_fooled
    assert (ours.x_adv[both] - theirs[both]).abs().max().item() <= 1e-5
    bound = ours.linf if norm == "linf" else ours.l2
    assert bound.max().item() <= eps + 1e-5
    queries = ours.extras["queries"]
    assert queries.max().item() <= 81  # the start and one query per iteration
    assert queries[ours.success].float().mean() < queries[~ours.success].float().mean()


@pytest.mark.slow
def test_success_rate_within_two_points_of_the_reference_at_the_full_budget(trained):
    model, x, y = trained
    x, y = _correct(model, x, y, 128)
    ours = create_attack("square", model, seed=0, eps=0.2, queries=5000)(x, y)
    _, theirs_fooled = _reference(model, x, y, "linf", 0.2, 5000)
    theirs_rate = theirs_fooled.float().mean().item()
    assert 0.05 < theirs_rate < 0.95
    assert abs(ours.success_rate - theirs_rate) <= 0.02


def test_schedule_by_hand():
    linf, l2 = SquareConfig(), SquareConfig(norm="l2")
    # p = 0.8 / 2^k on a 1x8x8 image: side round(sqrt(p * 64)), at least 1 (Linf) / 3 and odd (L2)
    sides = [square_size(it, linf, (1, 8, 8)) for it in (0, 10, 11, 51, 201, 501, 1001, 4999)]
    assert sides == [7, 7, 5, 4, 3, 2, 1, 1]
    assert [square_size(it, l2, (1, 8, 8)) for it in (0, 11, 51, 201, 501)] == [7, 5, 5, 3, 3]
    # rescaled to 10,000 queries: iteration 6 of 1,000 counts as 60
    fast = SquareConfig(queries=1000, rescale=True)
    assert square_size(6, fast, (1, 8, 8)) == 4


def test_images_only_and_bad_options(trained):
    model = trained[0]
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\)"):
        create_attack("square", torch.nn.Flatten())(torch.rand(2, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="0 < p_init <= 1"):
        create_attack("square", model, p_init=0.0)
    with pytest.raises(ValueError, match="has no EOT mode"):
        create_attack("square", model, eot_iter=2)
