"""Transfer attacks crafted on a surrogate, and the spread and cost of each evaluation row."""

import math

import pytest
import torch
from torch import nn

from nettle.attack import create_attack, evaluate_robustness, format_robustness


@pytest.fixture(scope="module")
def hardened(quadrants):
    """The conftest CNN trained on PGD examples (Madry et al.), eps 0.15, 3 steps."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 4)
    )
    x, y = quadrants(512)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    pgd = create_attack("pgd", model, seed=0, eps=0.15, alpha=0.06, steps=3)
    for _ in range(60):
        adv = pgd(x, y).x_adv
        opt.zero_grad()
        nn.functional.cross_entropy(model(adv), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def _naive_transfer(source, target, x, y, eps_list, options):
    """Cumulative broken masks by hand: craft on `source`, score on `target`."""
    with torch.no_grad():
        broken = target(x).argmax(1) != y
    out = {}
    for e in eps_list:
        adv = create_attack("pgd", source, seed=0, eps=e, alpha=e / 4, **options)(x, y).x_adv
        with torch.no_grad():
            broken = broken | (target(adv).argmax(1) != y)
        out[e] = 1 - broken.float().mean().item()
    return out


def test_transfer_from_a_natural_model_to_a_hardened_one(trained, hardened):
    natural, x, y = trained
    x, y = x[:128], y[:128]
    options = {"steps": 5, "random_start": False}
    eps = [0.05, 0.15]
    res = evaluate_robustness(
        hardened, (x, y), {"pgd": options}, eps, surrogate=natural, surrogate_name="natural"
    )
    row = "pgd (transfer from natural)"
    assert list(res.accuracy) == ["pgd", row]
    expected = _naive_transfer(natural, hardened, x, y, eps, options)
    for e in eps:
        assert abs(res.accuracy[row][e] - expected[e]) <= 1 / len(x)
        # adversarial training resists transfer at least as well as the white-box attack
        assert res.accuracy[row][e] >= res.accuracy["pgd"][e]
        assert res.worst[e] <= min(res.accuracy["pgd"][e], res.accuracy[row][e])
    assert not any("transfer" in w for w in res.warnings), res.warnings
    # crafting costs surrogate passes, scoring one target pass per example
    cost = res.cost[row][eps[0]]
    correct = round(res.clean_accuracy * len(x))
    assert (cost["forwards"], cost["backwards"]) == (correct * (5 + 1 + 1), correct * 5)


class Quantize(nn.Module):
    """Input quantisation with a zero gradient: a textbook gradient-masking defence."""

    def forward(self, x):
        return (torch.round(x * 3) / 3).detach()


def test_transfer_beating_white_box_is_flagged(trained):
    natural, x, y = trained
    masked = nn.Sequential(Quantize(), natural)
    res = evaluate_robustness(
        masked, (x[:64], y[:64]), {"pgd": {"steps": 5}}, [0.2], surrogate=natural
    )
    row = "pgd (transfer from surrogate)"
    assert res.accuracy[row][0.2] + 0.1 < res.accuracy["pgd"][0.2]
    assert any(w.startswith(f"{row} beats white-box pgd at eps 0.2") for w in res.warnings)
    assert "WARNING: pgd (transfer from surrogate) beats" in format_robustness(res)


def test_transfer_needs_per_attack_rows(trained):
    natural, x, y = trained
    with pytest.raises(ValueError, match=r"\(surrogate=\) need per_attack=True"):
        evaluate_robustness(
            natural, (x, y), {"fgsm": {}}, [0.1], surrogate=natural, per_attack=False
        )


def test_cost_counts_every_pass_and_spread_is_over_batches(trained):
    model, x, y = trained
    x, y = x[:128], y[:128]
    attacks = {"fgsm": {}, "pgd": {"steps": 3, "random_start": False}}
    eps = [0.05, 0.2]
    res = evaluate_robustness(model, (x, y), attacks, eps, batch_size=64, recheck=0, checks=False)
    n = len(x)
    correct = round(res.clean_accuracy * n)
    # FGSM: one gradient and one scoring pass per attacked example; PGD-3: three and one
    for name, steps in (("fgsm", 1), ("pgd", 3)):
        todo = [correct, round(res.accuracy[name][eps[0]] * n)]
        for e, m in zip(eps, todo, strict=True):
            assert res.cost[name][e]["forwards"] == (steps + 1) * m
            assert res.cost[name][e]["backwards"] == steps * m
            assert res.cost[name][e]["seconds"] > 0
    # the spread is the standard deviation of the two batches' accuracies
    halves = [
        evaluate_robustness(model, (x[i : i + 64], y[i : i + 64]), attacks, eps, checks=False)
        for i in (0, 64)
    ]
    for name in attacks:
        for e in eps:
            a, b = (h.accuracy[name][e] for h in halves)
            assert res.spread[name][e] == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-6)
    one_batch = evaluate_robustness(model, (x, y), attacks, eps, checks=False)
    assert one_batch.spread["fgsm"][eps[0]] is None
    data = res.to_dict()
    assert data["cost"]["pgd"]["0.2"] == res.cost["pgd"][0.2]
    assert data["spread"]["fgsm"]["0.05"] == res.spread["fgsm"][0.05]


def test_maxconf_confidence_curve_by_hand(trained):
    model, x, y = trained
    x, y = x[:48], y[:48]
    options = {"steps": 3}
    thresholds = (0.3, 0.6, 0.9)
    res = evaluate_robustness(
        model, (x, y), {"maxconf": options}, [0.25], checks=False, thresholds=thresholds
    )
    with torch.no_grad():
        probs = model(x).softmax(1)
    correct = probs.argmax(1) == y
    conf = torch.where(correct, 0.0, probs.max(1).values)
    attack = create_attack("maxconf", model, seed=0, eps=0.25, alpha=0.25 / 4, **options)
    found = attack(x[correct], y[correct]).extras["confidence"]
    conf[correct] = found
    curve = res.confidence["maxconf"][0.25]
    assert list(curve) == list(thresholds)
    for t in thresholds:
        assert curve[t] == pytest.approx((conf < t).float().mean().item())
    assert curve[0.3] <= curve[0.6] <= curve[0.9]
    assert "maxconf eps 0.25, accuracy vs confidence threshold: 0.3:" in format_robustness(res)
