"""FAB and FAB-T against the reference code (pyautoattack) on the trained CNN of conftest.py,
and the box-constrained projection by hand and against the reference's."""

import pytest
import torch
from pyautoattack.fab_projections import projection_l2, projection_linf
from pyautoattack.fab_pt import FABAttack_PT

from nettle.attack import create_attack
from nettle.attack.fab import project_onto_hyperplane

BOX = (0.0, 1.0)


@pytest.mark.parametrize(
    ("t", "w", "b", "linf", "l2"),
    [
        # inside the box: Linf moves every coordinate by the same 0.25; L2 along w
        ([0.5, 0.5], [1.0, 1.0], 1.5, [0.25, 0.25], [0.25, 0.25]),
        ([0.5, 0.5], [1.0, 2.0], 1.5 + 1.0, [1 / 3, 1 / 3], [0.2, 0.4]),
        # the first coordinate meets the edge 1 after 0.1; the second makes up the rest
        ([0.9, 0.5], [1.0, 1.0], 1.8, [0.1, 0.3], [0.1, 0.3]),
        # the plane is below: move down
        ([0.5, 0.5], [1.0, 1.0], 0.6, [-0.2, -0.2], [-0.2, -0.2]),
        # out of reach inside the box: the corner closest to the plane
        ([0.5, 0.5], [1.0, -1.0], 5.0, [0.5, -0.5], [0.5, -0.5]),
        # a zero weight never moves
        ([0.5, 0.5], [0.0, 2.0], 1.2, [0.0, 0.1], [0.0, 0.1]),
    ],
)
def test_projection_by_hand(t, w, b, linf, l2):
    args = torch.tensor([t]), torch.tensor([w]), torch.tensor([b])
    for norm, expected in (("linf", linf), ("l2", l2)):
        d = project_onto_hyperplane(*args, norm, BOX)
        assert d[0].tolist() == pytest.approx(expected, abs=1e-6), norm


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_equals_the_reference(norm):
    g = torch.Generator().manual_seed(0)
    t = torch.rand(256, 64, generator=g)
    t[:, :8] = t[:, :8].round()  # points on the box's faces
    w = torch.randn(256, 64, generator=g) * (torch.rand(256, 64, generator=g) > 0.1)
    b = (w * torch.rand(256, 64, generator=g)).sum(1) * torch.linspace(0.2, 3.0, 256)
    ours = project_onto_hyperplane(t, w, b, norm, BOX)
    theirs = (projection_linf if norm == "linf" else projection_l2)(t, w.clone(), b.clone())
    assert (ours - theirs).abs().max().item() <= 1e-4
    moved = t + ours
    assert moved.min().item() >= -1e-6 and moved.max().item() <= 1 + 1e-6
    on_plane = ((w * moved).sum(1) - b).abs() <= 1e-3
    assert 0.3 < on_plane.float().mean().item() < 1.0  # both reachable and unreachable planes


def _correct(model, x, y, n):
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:n], y[keep][:n]


@pytest.mark.parametrize(
    ("name", "norm", "eps"), [("fab-t", "linf", 0.15), ("fab-t", "l2", 0.9), ("fab", "linf", 0.15)]
)
def test_equals_the_reference(trained, name, norm, eps):
    model, x, y = trained
    x, y = _correct(model, x, y, 64)
    options = {"targets": 3} if name == "fab-t" else {}
    ours = create_attack(name, model, seed=0, eps=eps, norm=norm, steps=20, **options)(x, y)
    reference = FABAttack_PT(
        model,
        norm={"linf": "Linf", "l2": "L2"}[norm],
        n_iter=20,
        eps=eps,
        seed=0,
        targeted=name == "fab-t",
        n_target_classes=3,
        device="cpu",
    )
    theirs = reference.perturb(x, y)
    with torch.no_grad():
        theirs_fooled = model(theirs).argmax(1) != y
    assert 0.1 < ours.success_rate < 0.9  # mid-range: a comparison that can fail
    assert (ours.success != theirs_fooled).sum().item() <= 1  # deterministic: the same steps
    both = ours.success & theirs_fooled
    assert (ours.x_adv[both] - theirs[both]).abs().max().item() <= 1e-4
    bound = ours.linf if norm == "linf" else ours.l2
    assert bound.max().item() <= eps + 1e-6
    assert torch.equal(ours.x_adv[~ours.success], x[~ours.success])  # failures: the input


def test_restarts_start_at_half_eps_and_only_add_successes(trained):
    model, x, y = trained
    x, y = _correct(model, x, y, 48)
    one = create_attack("fab-t", model, seed=0, eps=0.12, steps=10, targets=1)(x, y)
    three = create_attack("fab-t", model, seed=0, eps=0.12, steps=10, targets=1, restarts=3)(x, y)
    assert not (one.success & ~three.success).any()  # the first run has no random start
    assert three.extras["runs"] > one.extras["runs"]


def test_bad_options():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        create_attack("fab", model, norm="l1")
    with pytest.raises(ValueError, match="0 < beta < 1"):
        create_attack("fab-t", model, beta=1.5)
    with pytest.raises(ValueError, match="attacks classifiers only"):
        create_attack("fab", model, loss_fn=lambda out, y: out.sum(1))
