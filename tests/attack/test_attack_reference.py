import torchattacks

from nettle.attack import create_attack


def test_fgsm_equals_torchattacks(trained):
    model, x, y = trained
    ours = create_attack("fgsm", model, eps=0.05)(x, y).x_adv
    theirs = torchattacks.FGSM(model, eps=0.05)(x, y)
    assert (ours - theirs).abs().max() <= 1e-6


def test_pgd_without_random_start_equals_torchattacks(trained):
    model, x, y = trained
    ours = create_attack("pgd", model, eps=0.08, alpha=0.01, steps=7, random_start=False)(
        x, y
    ).x_adv
    theirs = torchattacks.PGD(model, eps=0.08, alpha=0.01, steps=7, random_start=False)(x, y)
    assert (ours - theirs).abs().max() <= 1e-5


def test_cw_against_foolbox(trained):
    import foolbox as fb
    import torch

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
    ours_l2 = (ours.x_adv - x).flatten(1).norm(dim=1)[ours.success]
    theirs_l2 = (theirs - x).flatten(1).norm(dim=1)[success]
    assert ours.success.float().mean() >= success.float().mean() - 1e-9
    assert ours_l2.mean() <= 1.05 * theirs_l2.mean(), (ours_l2.mean(), theirs_l2.mean())
    assert torch.isfinite(ours_l2).all()


def test_apgd_ce_matches_the_autoattack_port_in_torchattacks(trained):
    model, x, y = trained
    eps = 0.15  # where robust accuracy is mid-range (about 69%)
    ours = create_attack("apgd", model, seed=0, eps=eps, steps=50)(x, y)
    theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=50, loss="ce", seed=0)(x, y)
    ours_acc = 1 - ours.success.float().mean().item()
    theirs_acc = (model(theirs).argmax(1) == y).float().mean().item()
    assert 0.2 < theirs_acc < 0.9  # a comparison that can fail
    assert abs(ours_acc - theirs_acc) <= 0.01 + 1e-9, (ours_acc, theirs_acc)
    assert (ours.x_adv - x).abs().max() <= eps + 1e-6
