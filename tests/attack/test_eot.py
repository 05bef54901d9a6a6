"""EOT for randomised models: averaged gradients, reproducibility, and the masking flag."""

import pytest
import torch
from torch import nn

from nettle.attack import create_attack, evaluate_robustness
from nettle.attack.masking import is_randomised


class Noisy(nn.Module):
    """A randomised defence: Gaussian noise added to the input at every forward pass."""

    def __init__(self, model: nn.Module, std: float):
        super().__init__()
        self.model, self.std = model, std

    def forward(self, x):
        return self.model(x + self.std * torch.randn_like(x))


def test_randomness_is_detected_and_the_global_state_left_alone(trained):
    model, x, _ = trained
    rng = torch.get_rng_state()
    assert is_randomised(Noisy(model, 0.1), x[:4])
    assert not is_randomised(model, x[:4])
    assert torch.equal(torch.get_rng_state(), rng)


def test_eot_averages_seeded_passes_and_is_reproducible(trained):
    model, x, y = trained
    noisy = Noisy(model, 0.3)
    options = {"eps": 0.1, "alpha": 0.03, "steps": 3, "eot_iter": 4}
    rng = torch.get_rng_state()
    first = create_attack("pgd", noisy, seed=0, **options)(x[:32], y[:32])
    again = create_attack("pgd", noisy, seed=0, **options)(x[:32], y[:32])
    assert torch.equal(torch.get_rng_state(), rng)  # only the attack's own generator drew
    assert torch.equal(first.x_adv, again.x_adv)
    # 3 steps x 4 passes forward and backward, and one scoring pass
    assert (first.forwards, first.backwards) == (32 * (3 * 4 + 1), 32 * 3 * 4)
    # on a deterministic model the average of identical passes is the single pass
    plain = create_attack("pgd", model, seed=0, eps=0.1, alpha=0.03, steps=3)(x, y)
    averaged = create_attack("pgd", model, seed=0, eps=0.1, alpha=0.03, steps=3, eot_iter=3)(x, y)
    assert torch.equal(plain.success, averaged.success)
    assert (plain.x_adv - averaged.x_adv).abs().max().item() <= 1e-6


def test_eot_option_is_checked():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="eot_iter must be a whole number >= 1, got 0"):
        create_attack("pgd", model, eot_iter=0)
    with pytest.raises(ValueError, match="SPSA has no EOT mode"):
        create_attack("spsa", model, eot_iter=5)


def test_a_randomised_model_without_eot_is_flagged_and_eot_attacks_harder(trained):
    model, x, y = trained
    noisy = Noisy(model, 0.5)
    x, y = x[:64], y[:64]
    torch.manual_seed(0)  # the plain run draws the model's noise from the global generator
    flag = "the model is randomised"
    base = {"steps": 5, "random_start": False}
    run = {"recheck": 0, "checks": False}  # the flag needs none of the (EOT-costly) checks
    plain = evaluate_robustness(noisy, (x, y), {"pgd": base}, [0.12], **run)
    eot = evaluate_robustness(noisy, (x, y), {"pgd": base | {"eot_iter": 20}}, [0.12], **run)
    assert plain.randomised and eot.randomised
    assert any(w.startswith(flag) and "pgd ran without EOT" in w for w in plain.warnings)
    assert not any(w.startswith(flag) for w in eot.warnings), eot.warnings
    assert eot.accuracy["pgd"][0.12] <= plain.accuracy["pgd"][0.12]
    # a deterministic model is not flagged
    quiet = evaluate_robustness(model, (x, y), {"pgd": base}, [0.12], **run)
    assert not quiet.randomised and not any(w.startswith(flag) for w in quiet.warnings)
