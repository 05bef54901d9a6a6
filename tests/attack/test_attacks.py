import pytest
import torch

from nettle.attack import create_attack, list_attacks

CONFIGS = {
    "fgsm": {"eps": 0.1},
    "bim": {"eps": 0.1, "alpha": 0.02, "steps": 5},
    "pgd": {"eps": 0.1, "alpha": 0.03, "steps": 5},
    "cw": {"binary_search_steps": 2, "steps": 20, "lr": 0.05, "initial_const": 1.0},
    "spsa": {"eps": 0.1, "steps": 5, "nb_sample": 16, "lr": 0.02},
    "maxconf": {"eps": 0.1, "alpha": 0.03, "steps": 3},
    "jsma": {"theta": 1.0, "gamma": 0.1},
    "apgd": {"eps": 0.1, "steps": 10},
}
BOUND = {
    "fgsm": ("linf", 0.1),
    "bim": ("linf", 0.1),
    "pgd": ("linf", 0.1),
    "spsa": ("linf", 0.1),
    "maxconf": ("linf", 0.1),
    "apgd": ("linf", 0.1),
}


def test_every_registered_attack_is_configured_here():
    assert sorted(CONFIGS) == list_attacks()


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_invariants(trained, name):
    model, x, y = trained
    model.train()  # the attack must put it in eval mode and restore this
    model.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    result = create_attack(name, model, seed=0, **CONFIGS[name])(x, y)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    adv = result.x_adv
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    if name == "jsma":  # L0: at most gamma * D features, changed in pairs
        assert ((adv - x).flatten(1) != 0).sum(1).max().item() <= 2 * int(0.1 * 64 / 2)
    if name in BOUND:
        norm, eps = BOUND[name]
        dist = (
            (adv - x).flatten(1).abs().amax(1)
            if norm == "linf"
            else (adv - x).flatten(1).norm(dim=1)
        )
        assert dist.max().item() <= eps + 1e-6
    model.eval()
    robust = _acc(model, adv, y)
    assert robust <= _acc(model, x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    assert torch.equal(result.success, fooled)
    again = create_attack(name, model, seed=0, **CONFIGS[name])(x, y)
    assert torch.equal(again.x_adv, adv)  # deterministic under a seed


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("batch", [1, 256])
def test_batch_sizes(trained, name, batch):
    model, x, y = trained
    xb, yb = x[:batch], y[:batch]
    assert create_attack(name, model, seed=1, **CONFIGS[name])(xb, yb).x_adv.shape == xb.shape


@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw", "jsma", "spsa"])
def test_targeted(trained, name):
    model, x, y = trained
    target = (y + 1) % 4
    cfg = dict(CONFIGS[name])
    if name == "jsma":
        cfg["gamma"] = 0.5
    elif name == "spsa":
        cfg.update(eps=0.5, steps=20, lr=0.05)
    elif name != "cw":
        cfg["eps"] = 0.5
        if name == "pgd":
            cfg.update(steps=20, alpha=0.05)
    result = create_attack(name, model, seed=0, **cfg)(x, y, target=target)
    with torch.no_grad():
        hit = model(result.x_adv).argmax(1) == target
    assert torch.equal(result.success, hit)
    assert hit.float().mean() > (0.3 if name in ("fgsm", "spsa") else 0.8)


def test_mode_restored_on_error(trained):
    model, x, y = trained
    model.train()
    with pytest.raises(RuntimeError):
        create_attack("pgd", model)(x[:, :, :5], y)  # wrong input shape fails inside
    assert model.training
    model.eval()


def test_l2_pgd_stays_in_ball(trained):
    model, x, y = trained
    res = create_attack("pgd", model, seed=0, eps=2.0, alpha=0.5, steps=5, norm="l2", restarts=2)(
        x, y
    )
    assert (res.x_adv - x).flatten(1).norm(dim=1).max() <= 2.0 + 1e-5
    assert res.success.float().mean() > 0


def test_restarts_never_hurt(trained):
    model, x, y = trained
    one = create_attack("pgd", model, seed=0, eps=0.06, alpha=0.02, steps=3)(x, y).success.sum()
    many = create_attack("pgd", model, seed=0, eps=0.06, alpha=0.02, steps=3, restarts=4)(
        x, y
    ).success.sum()
    assert many >= one


def test_cw_moves_saturated_pixels(trained):
    model, x, y = trained
    x = x.clone()
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    res = create_attack("cw", model, seed=0, **CONFIGS["cw"])(x[:32], y[:32])
    moved = (res.x_adv - x[:32]).abs()
    assert moved[:, :, 0, :].max() > 0 or moved[:, :, -1, :].max() > 0
    assert res.success.float().mean() >= 0.9


def test_bad_names_and_options(trained):
    model, *_ = trained
    with pytest.raises(KeyError, match="unknown attack 'deepfool'"):
        create_attack("deepfool", model)
    with pytest.raises(ValueError, match="PGD has no option 'epsilon'"):
        create_attack("pgd", model, epsilon=0.1)
    with pytest.raises(ValueError, match="norm must be"):
        create_attack("pgd", model, norm="l1")


@pytest.mark.parametrize("name", ["maxconf", "apgd"])
def test_untargeted_only(trained, name):
    model, x, y = trained
    with pytest.raises(ValueError, match="no targeted mode"):
        create_attack(name, model, **CONFIGS[name])(x[:2], y[:2], target=y[:2])


def test_apgd_checkpoints_and_dlr():
    from nettle.attack.apgd import checkpoints, dlr_loss

    # p: 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    # y = 0 is the top class: -(3 - 1) / (3 - 0)
    assert dlr_loss(logits, torch.tensor([0])).item() == pytest.approx(-2 / 3)


def test_stronger_attacks_are_at_least_as_strong(trained):
    model, x, y = trained
    pgd = (
        create_attack("pgd", model, seed=0, eps=0.08, alpha=0.02, steps=10)(x, y)
        .success.float()
        .mean()
    )
    apgd = create_attack("apgd", model, seed=0, eps=0.08, steps=20)(x, y).success.float().mean()
    fgsm = create_attack("fgsm", model, eps=0.08)(x, y).success.float().mean()
    assert apgd >= pgd - 0.02 and pgd >= fgsm - 0.02
