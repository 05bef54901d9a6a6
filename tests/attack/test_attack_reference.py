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
