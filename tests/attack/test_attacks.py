"""Invariants of every registered attack, on the small trained CNN of conftest.py (4 classes,
1x8x8 inputs, clean accuracy > 95%), plus facts about single attacks."""

import re

import pytest
import torch
from torch import nn

from nettle.attack import ATTACKS, Attack, create_attack, list_attacks
from nettle.attack.apgd import checkpoints, dlr_loss
from nettle.attack.fgsm import FGSMConfig
from nettle.attack.jsma import best_pairs
from nettle.attack.pgd import BIMConfig, PGDConfig
from nettle.registry import UnknownNameError

# case id -> (attack, options, bound as (norm, radius) or None)
CASES = {
    "fgsm": ("fgsm", {"eps": 0.15}, ("linf", 0.15)),
    "bim": ("bim", {"eps": 0.15, "alpha": 0.03, "steps": 5}, ("linf", 0.15)),
    "pgd": ("pgd", {"eps": 0.15, "alpha": 0.04, "steps": 5, "restarts": 2}, ("linf", 0.15)),
    "pgd-l2": (
        "pgd",
        {"eps": 1.0, "alpha": 0.3, "steps": 5, "norm": "l2", "restarts": 2},
        ("l2", 1.0),
    ),
    "cw": ("cw", {"binary_search_steps": 2, "steps": 20, "lr": 0.05, "initial_const": 1.0}, None),
    "spsa": ("spsa", {"eps": 0.15, "steps": 5, "nb_sample": 16, "lr": 0.03}, ("linf", 0.15)),
    "maxconf": ("maxconf", {"eps": 0.15, "alpha": 0.04, "steps": 3}, ("linf", 0.15)),
    "jsma": ("jsma", {"theta": 1.0, "gamma": 0.2}, ("l0", 14)),  # ceil(0.2 * 64 / 2) pairs
    "apgd": ("apgd", {"eps": 0.15, "steps": 8, "restarts": 2}, ("linf", 0.15)),
    "apgd-l2-dlr": (
        "apgd",
        {"eps": 1.0, "steps": 8, "norm": "l2", "loss": "dlr"},
        ("l2", 1.0),
    ),
    "apgd-t": ("apgd-t", {"eps": 0.15, "steps": 8, "targets": 3}, ("linf", 0.15)),
    "fab": ("fab", {"eps": 0.15, "steps": 10}, ("linf", 0.15)),
    "fab-t-l2": ("fab-t", {"eps": 1.0, "steps": 10, "norm": "l2", "targets": 3}, ("l2", 1.0)),
    "square": ("square", {"eps": 0.15, "queries": 60}, ("linf", 0.15)),
    "square-l2": ("square", {"eps": 1.0, "queries": 60, "norm": "l2"}, ("l2", 1.0)),
    "autoattack": (
        "autoattack",
        {"eps": 0.15, "steps": 5, "targets": 2, "queries": 30},
        ("linf", 0.15),
    ),
}
# stronger settings for targeted runs towards (y + 1) % 4, and the success rate each must reach
TARGETED = {
    "fgsm": ({"eps": 0.5}, 0.3),
    "bim": ({"eps": 0.4, "alpha": 0.05, "steps": 10}, 0.9),
    "pgd": ({"eps": 0.4, "alpha": 0.05, "steps": 10}, 0.9),
    "cw": (CASES["cw"][1], 0.9),
    "spsa": ({"eps": 0.4, "steps": 10, "nb_sample": 32, "lr": 0.05}, 0.5),
    "jsma": ({"gamma": 0.5}, 0.8),
    "apgd": ({"eps": 0.4, "steps": 10}, 0.9),
}

# The "breaks a trained model" invariant: every case's budget raised to these radii (step sizes
# scaled alike), and the success rate it must then reach on the trained CNN. An attack that
# returns its input reaches the model's own errors (< 5%). Override a case's floor in
# MIN_SUCCESS.
LARGE = {"linf": 0.4, "l2": 3.0}
MIN_SUCCESS_DEFAULT = 0.9
MIN_SUCCESS: dict[str, float] = {}


def _large(case: str) -> tuple[str, dict]:
    name, options, bound = CASES[case]
    options = dict(options)
    if bound is not None and bound[0] in LARGE and "eps" in options:
        scale = LARGE[bound[0]] / options["eps"]
        options["eps"] = LARGE[bound[0]]
        for step in ("alpha", "lr"):  # step sizes in input units (PGD's, SPSA's)
            if step in options:
                options[step] *= scale
    return name, options


def assert_breaks(result, x, rate: float) -> None:
    """The attack fooled at least `rate` of the examples, each by changing its input."""
    changed = (result.x_adv != x).flatten(1).any(1)
    assert changed[result.success].all()
    assert result.success.float().mean().item() >= rate, result.success.float().mean().item()


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _dist(delta, norm):
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    return (flat != 0).sum(1).float()


def test_every_registered_attack_has_a_case():
    assert {name for name, _, _ in CASES.values()} == set(list_attacks())
    targeted = {n for n in list_attacks() if ATTACKS.get(n).targeted_supported}
    assert targeted == set(TARGETED)


@pytest.mark.parametrize("case", sorted(CASES))
def test_invariants(trained, case):
    model, x, y = trained
    name, options, bound = CASES[case]
    model.train()
    model[0].eval()  # a mixed state, to be restored module by module
    model[4].bias.requires_grad_(False)
    grads = [torch.full_like(p, 0.5) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    try:
        result = create_attack(name, model, seed=0, **options)(x, y)
        assert torch.equal(torch.get_rng_state(), rng)  # a private generator only
        assert [m.training for m in model.modules()] == [True, False, True, True, True, True]
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
        assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]
    finally:
        model[4].bias.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.eval()
    adv = result.x_adv
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    if bound is not None:
        norm, radius = bound
        assert _dist(adv - x, norm).max().item() <= radius + 1e-6
    assert _acc(model, adv, y) <= _acc(model, x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    assert torch.equal(result.success, fooled)
    assert torch.allclose(result.linf, _dist(adv - x, "linf"))
    assert torch.allclose(result.l2, _dist(adv - x, "l2"))
    assert torch.equal(result.l0.float(), _dist(adv - x, "l0"))
    # same seed, same result; also under the caller's no_grad
    with torch.no_grad():
        again = create_attack(name, model, seed=0, **options)(x, y)
    assert torch.equal(again.x_adv, adv)


QUADRANTS = ((0, 0), (0, 4), (4, 0), (4, 4))


def _quadrant_scorer() -> nn.Module:
    """A fixed linear model: class k scores the sum of quadrant k of a 1x8x8 image minus a
    third of the rest. Raising quadrant t and lowering the true one moves towards class t."""
    weight = torch.full((4, 1, 8, 8), -1 / 3)
    for k, (r, c) in enumerate(QUADRANTS):
        weight[k, 0, r : r + 4, c : c + 4] = 1.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with torch.no_grad():
        model[1].weight.copy_(weight.flatten(1))
        model[1].bias.zero_()
    return model.eval()


def _quadrant_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images (0.5 +- 0.1 noise) with the true class's quadrant 0.1 brighter: the score
    margin is 16 * 0.1 * 4/3 ~ 2.1 (at least 1.1 here), an L-inf step of 0.15 moves it 6.4."""
    y = torch.arange(n) % 4
    x = 0.4 + 0.2 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for k, (r, c) in enumerate(QUADRANTS):
        x[y == k, :, r : r + 4, c : c + 4] += 0.1
    return x, y


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The true class's score minus the best other class's (negative: misclassified)."""
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return logits.gather(1, y[:, None])[:, 0] - others


@pytest.mark.parametrize("case", sorted(CASES))
def test_untargeted_attacks_change_the_input_and_fool_a_linear_model(case):
    # an attack that returns its input (or noise of the same size) fools no example here
    model, (x, y) = _quadrant_scorer(), _quadrant_inputs(64)
    assert _acc(model, x, y) == 1.0  # every success is the attack's own
    name, options, _ = CASES[case]
    result = create_attack(name, model, seed=0, **options)(x, y)
    changed = (result.x_adv != x).flatten(1).any(1)
    assert changed[result.success].all()
    assert result.success.float().mean().item() >= 0.9
    # the true class's score fell against the best other class for every example
    with torch.no_grad():
        assert (_margin(model(result.x_adv), y) < _margin(model(x), y)).all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_untargeted_attacks_break_a_trained_model_at_a_large_budget(trained, case):
    model, x, y = trained
    name, options = _large(case)
    result = create_attack(name, model, seed=0, **options)(x, y)
    assert_breaks(result, x, MIN_SUCCESS.get(case, MIN_SUCCESS_DEFAULT))


class _ReturnsItsInput(Attack):
    """A broken attack: it returns the clean input."""

    Config = FGSMConfig

    def perturb(self, x, y, target):
        return x


def test_the_large_budget_invariant_rejects_an_attack_that_returns_its_input(trained):
    model, x, y = trained
    result = _ReturnsItsInput(model, eps=0.4)(x, y)
    assert result.success.float().mean().item() < 0.05  # the model's own errors only
    with pytest.raises(AssertionError):
        assert_breaks(result, x, MIN_SUCCESS_DEFAULT)


@pytest.mark.parametrize("name", list_attacks())
def test_batch_of_one(trained, name):
    model, x, y = trained
    options = next(o for n, o, _ in CASES.values() if n == name)
    result = create_attack(name, model, seed=1, **options)(x[:1], y[:1])
    assert result.x_adv.shape == (1, 1, 8, 8) and result.success.shape == (1,)


@pytest.mark.parametrize("name", sorted(TARGETED))
def test_targeted(trained, name):
    model, x, y = trained
    options, rate = TARGETED[name]
    target = (y + 1) % 4
    result = create_attack(name, model, seed=0, **options)(x, y, target=target)
    with torch.no_grad():
        hit = model(result.x_adv).argmax(1) == target
    assert torch.equal(result.success, hit)
    assert hit.float().mean().item() >= rate


class Boom(nn.Module):
    """A model that fails inside the attack."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Dropout())

    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", list_attacks())
def test_mode_restored_after_an_error(name):
    model = Boom().train()
    model.inner[2].eval()
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match="boom"):
        create_attack(name, model)(x, y)
    assert [m.training for m in model.modules()] == [True, True, True, True, False]


def test_unknown_names_options_and_bad_inputs(trained):
    model, x, y = trained
    known = re.escape(", ".join(list_attacks()))
    with pytest.raises(UnknownNameError, match=f"unknown attack 'deepfool'; known: {known}$"):
        create_attack("deepfool", model)
    with pytest.raises(ValueError, match="PGD has no option 'epsilon'"):
        create_attack("pgd", model, epsilon=0.1)
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        create_attack("pgd", model, norm="l1")
    with pytest.raises(ValueError, match="loss must be 'ce' or 'dlr'"):
        create_attack("apgd", model, loss="cw")
    attack = create_attack("fgsm", model)
    with pytest.raises(ValueError, match=r"valid range \[0, 1\]"):
        attack((x - 0.5) / 0.25, y)  # normalised inputs: the model must normalise
    with pytest.raises(ValueError, match=r"y must be class indices of shape \(256,\)"):
        attack(x, y[:5])
    with pytest.raises(ValueError, match="MaxConfidence has no targeted mode"):
        create_attack("maxconf", model)(x[:2], y[:2], target=y[:2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_and_inputs_on_different_devices(trained):
    model, x, y = trained
    cuda_model = nn.Sequential(*[m for m in model]).cuda()
    result = create_attack("pgd", cuda_model, seed=0, eps=0.15)(x, y)
    assert result.x_adv.device == x.device and result.success.device == x.device
    assert next(model.parameters()).device.type == "cpu"


def test_opt_in_fast_path_keeps_the_bound_and_full_precision_success(trained):
    model, x, y = trained
    attack = create_attack(
        "pgd", model, seed=0, eps=0.15, autocast=torch.bfloat16, channels_last=True
    )
    result = attack(x, y)
    assert result.x_adv.is_contiguous() and result.linf.max().item() <= 0.15 + 1e-6
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)


def test_defaults_follow_the_papers():
    assert (PGDConfig().eps, PGDConfig().alpha) == (8 / 255, 2 / 255)
    assert (PGDConfig(norm="l2").eps, PGDConfig(norm="l2").alpha) == (1.0, 0.2)
    # Kurakin et al.: alpha = 1/255, steps = min(eps + 4, 1.25 eps) in pixel units
    assert (BIMConfig().alpha, BIMConfig().steps) == (1 / 255, 10)
    assert BIMConfig(eps=4 / 255).steps == 5 and BIMConfig(eps=16 / 255).steps == 20


def test_pgd_l2_random_start_is_uniform_in_the_ball():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x = torch.full((4000, 1, 8, 8), 0.5)  # far from the range's edges: no clipping
    attack = create_attack("pgd", model, seed=0, eps=0.5, steps=0, norm="l2")
    r = attack(x, torch.zeros(4000, dtype=torch.long)).l2 / 0.5
    assert r.max().item() <= 1 + 1e-6
    # uniform in a 64-dimensional ball: (r / eps)^64 is uniform on [0, 1]
    assert r.pow(64).mean().item() == pytest.approx(0.5, abs=0.02)


def test_restarts_keep_every_earlier_success(trained):
    model, x, y = trained
    options = {"eps": 0.16, "alpha": 0.04, "steps": 4}
    one = create_attack("pgd", model, seed=0, **options)(x, y)
    four = create_attack("pgd", model, seed=0, restarts=4, **options)(x, y)
    assert not (one.success & ~four.success).any()  # the first run is the same
    assert four.success.sum() > one.success.sum()
    assert four.extras["gradients"] < 4 * 4 * len(x)  # later runs only on the survivors


def test_apgd_checkpoints_and_dlr_by_hand():
    # p: 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    # y = 0 is the top class: -(3 - 1) / (3 - 0)
    assert dlr_loss(logits, torch.tensor([0])).item() == pytest.approx(-2 / 3)
    # y = 2: -(0 - 3) / (3 - 0)
    assert dlr_loss(logits, torch.tensor([2])).item() == pytest.approx(1.0)
    # targeted, y = 0, t = 2: -(3 - 0) / (3 - (0 + -1) / 2)
    assert dlr_loss(logits, torch.tensor([0]), torch.tensor([2])).item() == pytest.approx(-3 / 3.5)


def test_jsma_pair_search_by_hand():
    alpha = torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    beta = torch.tensor([[-1.0, -3.0, 1.0, 2.0]])
    # admissible: (0,1): 3 * 4 = 12, (1,2): 1 * 2 = 2, (1,3): 2.5 * 1 = 2.5
    p, q, found = best_pairs(alpha, beta, torch.ones(1, 4, dtype=torch.bool))
    assert {p.item(), q.item()} == {0, 1} and found.item()
    p, q, _ = best_pairs(alpha, beta, torch.tensor([[False, True, True, True]]))
    assert {p.item(), q.item()} == {1, 3}
    _, _, found = best_pairs(alpha, beta, torch.tensor([[False, False, True, True]]))
    assert not found.item()  # (2, 3): alpha sum -0.5


def test_jsma_changes_few_features_by_theta(trained):
    model, x, y = trained
    # decreasing features (theta < 0) rarely works on this task: max-pooling leaves few
    # features with a nonzero gradient, and the search stops when no pair is admissible
    for theta, end, rate in ((1.0, 1.0, 0.95), (-1.0, 0.0, 0.0)):
        result = create_attack("jsma", model, theta=theta, gamma=0.25)(x[:64], y[:64])
        changed = result.x_adv != x[:64]
        assert result.l0.max().item() <= 2 * 8  # ceil(0.25 * 64 / 2) pairs
        assert torch.equal(result.x_adv[changed], torch.full_like(result.x_adv[changed], end))
        assert result.success.float().mean().item() >= rate


def test_spsa_estimates_the_gradient_of_the_margin():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    attack = create_attack("spsa", model, seed=0, nb_sample=4096)
    attack.generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 2])
    estimate = attack.estimate(x, y, None).flatten(1)
    w = model[1].weight.detach()
    # with the other class fixed near x, the margin Z_y - Z_o is linear: gradient w_y - w_o
    other = model(x).detach().scatter(1, y[:, None], float("-inf")).argmax(1)
    exact = w[y] - w[other]
    cos = torch.nn.functional.cosine_similarity(estimate, exact, dim=1)
    assert cos.min().item() > 0.97


def test_spsa_stops_querying_fooled_examples(trained):
    model, x, y = trained
    options = {"eps": 0.25, "steps": 8, "nb_sample": 16, "lr": 0.05}
    result = create_attack("spsa", model, seed=0, **options)(x, y)
    queries = result.extras["queries"]
    assert queries.max().item() <= 8 * (2 * 16 + 1)
    assert queries[result.success].float().mean() < queries[~result.success].float().mean()


def test_maxconf_keeps_the_most_confident_misclassification(trained):
    model, x, y = trained
    options = {"eps": 0.25, "alpha": 0.05, "steps": 5}
    result = create_attack("maxconf", model, seed=0, **options)(x[:64], y[:64])
    with torch.no_grad():
        probs = model(result.x_adv).softmax(1)
    wrong = probs.scatter(1, y[:64, None], 0.0).amax(1)
    expected = torch.where(result.success, wrong, torch.zeros_like(wrong))
    assert torch.allclose(result.extras["confidence"], expected, atol=1e-6)
    pgd = create_attack("pgd", model, seed=0, **options)(x[:64], y[:64])
    with torch.no_grad():
        pgd_wrong = model(pgd.x_adv).softmax(1).scatter(1, y[:64, None], 0.0).amax(1)
    assert expected.mean() >= torch.where(pgd.success, pgd_wrong, 0.0).mean()
