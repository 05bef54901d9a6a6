import torch
from torch import nn

from nettle.attack import create_attack, evaluate_robustness, format_robustness

EPS = [0.02, 0.05, 0.1, 0.2, 0.3]
ATTACKS = {"fgsm": {}, "pgd": {"steps": 5, "random_start": False}, "bim": {"steps": 5}}


def test_curves_are_monotone_worst_is_min_and_match_full_evaluation(trained):
    model, x, y = trained
    res = evaluate_robustness(model, (x, y), ATTACKS, EPS, checks=False)
    assert res.clean_accuracy > 0.95 and res.examples == len(x)
    for name, curve in res.accuracy.items():
        values = [curve[e] for e in EPS]
        assert values == sorted(values, reverse=True), name
        assert all(res.worst[e] <= curve[e] for e in EPS)
    # same accuracies as attacking everything at every epsilon, with far fewer attacked examples
    naive_calls = 0
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    for name, options in ATTACKS.items():
        broken = ~clean
        for e in EPS:
            opts = {**options, "eps": e} | ({"alpha": e / 4} if name != "fgsm" else {})
            broken = broken | create_attack(name, model, seed=0, **opts)(x, y).success
            naive_calls += len(x)
            assert abs(res.accuracy[name][e] - (~broken).float().mean().item()) <= 1 / len(x)
    assert res.attacked < naive_calls
    text = format_robustness(res)
    assert text.splitlines()[1].split() == ["attack", *[f"{e:g}" for e in EPS]]


class Quantize(nn.Module):
    """Input quantisation with a zero gradient: a textbook gradient-masking defence."""

    def forward(self, x):
        return (torch.round(x * 3) / 3).detach()


def test_masking_checks_fire_on_a_masked_model_and_stay_quiet_otherwise(trained):
    model, x, y = trained
    quiet = evaluate_robustness(model, (x[:64], y[:64]), {"pgd": {"steps": 5}}, [0.05, 0.1])
    assert quiet.warnings == []
    masked = nn.Sequential(Quantize(), model)
    loud = evaluate_robustness(masked, (x[:64], y[:64]), {"pgd": {"steps": 5}}, [0.05, 0.1])
    assert any("unbounded PGD" in w for w in loud.warnings), loud.warnings
    assert "WARNING: an unbounded PGD" in format_robustness(loud)


def test_worst_case_only_mode_gives_the_same_worst_case_with_less_work(trained):
    model, x, y = trained
    exact = evaluate_robustness(model, (x, y), ATTACKS, EPS, checks=False, recheck=0)
    fast = evaluate_robustness(
        model, (x, y), ATTACKS, EPS, checks=False, recheck=0, per_attack=False
    )
    assert fast.worst == exact.worst
    assert fast.attacked < exact.attacked
