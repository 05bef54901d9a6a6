"""Side by side with torchattacks 3.5.1 on the same model and inputs (conftest.py); CW checked
against a PGD-L2 radius, on saturated pixels, and against Foolbox where it is installed."""

import pytest
import torch
import torchattacks

from nettle.attack import create_attack


def test_fgsm_equals_torchattacks(trained):
    model, x, y = trained
    ours = create_attack("fgsm", model, eps=0.05)(x, y).x_adv
    theirs = torchattacks.FGSM(model, eps=0.05)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    ("norm", "eps", "theirs"), [("linf", 0.12, torchattacks.PGD), ("l2", 1.0, torchattacks.PGDL2)]
)
def test_pgd_without_random_start_equals_torchattacks(trained, norm, eps, theirs):
    model, x, y = trained
    options = {"eps": eps, "alpha": eps / 8, "steps": 7, "random_start": False}
    ours = create_attack("pgd", model, norm=norm, **options)(x, y).x_adv
    reference = theirs(model, **options)(x, y)
    gap = (ours - reference).flatten(1).abs().amax(1)
    if norm == "linf":
        assert gap.max().item() <= 1e-5
    else:
        # torchattacks divides the mean-reduced gradient by its norm + 1e-10, which shortens
        # the step where that norm is ~1e-6 (confident examples); elsewhere both agree
        assert (gap <= 1e-5).float().mean().item() >= 0.9 and gap.max().item() <= 1e-3


def test_bim_equals_torchattacks(trained):
    model, x, y = trained
    ours = create_attack("bim", model, eps=0.12, alpha=0.02, steps=6)(x, y).x_adv
    theirs = torchattacks.BIM(model, eps=0.12, alpha=0.02, steps=6)(x, y)
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("loss", "norm", "eps"), [("ce", "linf", 0.15), ("dlr", "l2", 1.0)])
def test_apgd_matches_the_autoattack_port_in_torchattacks(trained, loss, norm, eps):
    model, x, y = trained
    ours = create_attack("apgd", model, seed=0, eps=eps, steps=50, loss=loss, norm=norm)(x, y)
    theirs = torchattacks.APGD(
        model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=50, loss=loss, seed=0
    )(x, y)
    ours_acc = 1 - ours.success_rate
    with torch.no_grad():
        theirs_acc = (model(theirs).argmax(1) == y).float().mean().item()
    assert 0.2 < theirs_acc < 0.9  # mid-range: a comparison that can fail
    assert abs(ours_acc - theirs_acc) <= 0.01, (ours_acc, theirs_acc)
    bound = ours.linf if norm == "linf" else ours.l2
    assert bound.max().item() <= eps + 1e-6


def test_jsma_equals_torchattacks(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    target = (y + 1) % 4
    ours = create_attack("jsma", model, theta=1.0, gamma=0.1)(x, y, target=target)
    reference = torchattacks.JSMA(model, theta=1.0, gamma=0.1)
    reference.set_mode_targeted_by_label(quiet=True)
    theirs = reference(x, target)  # one image at a time, one backward per class
    model.zero_grad(set_to_none=True)  # torchattacks back-propagates into the parameters
    assert torch.equal(ours.x_adv, theirs)
    assert 0.5 < ours.success_rate < 1.0  # a comparison that can fail


def _pgd_l2_radius(model, x, y, rate=0.95, steps=8):
    """Smallest L2 radius (by bisection) at which PGD-L2 fools `rate` of the examples."""
    lo, hi = 0.0, 4.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        attack = create_attack("pgd", model, seed=0, norm="l2", eps=mid, alpha=mid / 4, steps=10)
        if attack(x, y).success_rate >= rate:
            hi = mid
        else:
            lo = mid
    return hi


def test_cw_finds_smaller_perturbations_than_pgd_needs(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    cw = create_attack("cw", model, binary_search_steps=5, steps=100, lr=0.05, initial_const=0.1)(
        x, y
    )
    radius = _pgd_l2_radius(model, x, y)
    assert cw.success_rate >= 0.95
    assert 0.5 < radius < 4.0  # the bisection found an interior radius
    assert cw.l2[cw.success].mean().item() < radius, (cw.l2[cw.success].mean(), radius)


def test_cw_moves_pixels_at_exactly_zero_and_one(trained):
    model, x, y = trained
    x = x[:64].clone()
    x[:, :, :, 3:5] = 0.0  # two columns black, two rows white: on quadrant borders
    x[:, :, 3:5, :] = 1.0
    y = y[:64]
    ours = create_attack("cw", model, binary_search_steps=3, steps=100, lr=0.05)(x, y)
    theirs = torchattacks.CW(model, c=1.0, steps=100, lr=0.05)(x, y)
    model.zero_grad(set_to_none=True)  # torchattacks' CW back-propagates into the parameters
    zeros, ones = x == 0, x == 1
    moved = (ours.x_adv - x).abs() > 1e-3
    assert (moved & zeros).sum().item() > 0 and (moved & ones).sum().item() > 0
    assert ((theirs - x)[zeros | ones] == 0).all()  # their atanh(+-1) = +-inf never moves


def test_cw_against_foolbox(trained):
    fb = pytest.importorskip("foolbox")
    model, x, y = trained
    x, y = x[:64], y[:64]
    settings = {"binary_search_steps": 5, "steps": 60, "initial_const": 0.1}
    ours = create_attack("cw", model, lr=0.01, **settings)(x, y)
    fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1))
    attack = fb.attacks.L2CarliniWagnerAttack(
        stepsize=0.01, confidence=0.0, abort_early=True, **settings
    )
    _, theirs, success = attack(fmodel, x, y, epsilons=None)
    model.zero_grad(set_to_none=True)  # foolbox back-propagates into the parameters
    ours_l2 = ours.l2[ours.success]
    theirs_l2 = (theirs - x).flatten(1).norm(dim=1)[success]
    assert ours.success_rate >= success.float().mean().item() - 1e-9
    assert ours_l2.mean() <= 1.05 * theirs_l2.mean(), (ours_l2.mean(), theirs_l2.mean())
