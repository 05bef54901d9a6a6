"""The AutoAttack ensemble: stage order, survivors only, the result's facts, the same numbers as
the reference code (pyautoattack) with the same small budgets, and the ways in (registry,
evaluate_robustness presets)."""

import logging

import pytest
import torch
from pyautoattack import AutoAttack

import nettle.attack.autoattack as aa
from nettle.attack import create_attack, evaluate_robustness, run_autoattack

SMALL = {"steps": 10, "targets": 3, "queries": 100}


class _Spy:
    """An attack that records its name, itself, its inputs and its successes per call."""

    def __init__(self, name, attack, seen):
        self.name, self.attack, self.seen = name, attack, seen

    def __call__(self, x, y, target=None):
        result = self.attack(x, y, target)
        self.seen.append((self.name, self.attack, x.clone(), result.success.clone()))
        return result


@pytest.fixture
def calls(monkeypatch):
    """Every attack call the ensemble makes."""
    seen, build = [], aa.create_attack
    monkeypatch.setattr(aa, "create_attack", lambda n, m, **o: _Spy(n, build(n, m, **o), seen))
    return seen


def test_stage_order_and_only_survivors_attacked(trained, calls):
    model, x, y = trained
    x, y = x[:96], y[:96]
    result = run_autoattack(model, x, y, 0.15, seed=0, **SMALL)
    assert [c[0] for c in calls] == ["apgd", "apgd-t", "fab-t", "square"]
    assert list(result.accuracy) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    survivors = x[clean]
    for name, _, inputs, success in calls:
        assert torch.equal(inputs, survivors), name  # exactly the still-robust examples
        survivors = inputs[~success]
    assert result.attacked == {s: len(c[2]) for s, c in zip(result.accuracy, calls)}
    accs = [result.clean_accuracy, *result.accuracy.values()]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]
    assert result.robust_accuracy == accs[-1] == len(survivors) / len(x)
    with torch.no_grad():
        still = model(result.x_adv).argmax(1) == y
    assert torch.equal(still, result.robust)  # the returned inputs fool exactly the others
    assert (result.x_adv - x).abs().amax().item() <= 0.15 + 1e-6
    assert set(result.seconds) == set(result.accuracy) and min(result.seconds.values()) >= 0
    # passes: APGD-CE one backward per example and iteration (10) plus its start; Square none
    assert result.backwards["apgd-ce"] == 11 * result.attacked["apgd-ce"]
    assert result.backwards["square"] == 0 < result.forwards["square"]


def test_rand_version_runs_apgd_ce_and_dlr_with_eot(trained, calls):
    model, x, y = trained
    result = run_autoattack(model, x[:32], y[:32], 0.15, version="rand", steps=3, eot_iter=2)
    assert list(result.accuracy) == ["apgd-ce", "apgd-dlr"]
    assert [(c[1].config.loss, c[1].eot_iter) for c in calls] == [("ce", 2), ("dlr", 2)]


def test_same_numbers_as_the_reference(trained):
    model, x, y = trained
    x, y = x[:96], y[:96]
    ours = run_autoattack(model, x, y, 0.14, seed=0, **SMALL)
    adversary = AutoAttack(model, eps=0.14, seed=0, version="standard")
    adversary.logger.setLevel(logging.WARNING)
    for attack in (adversary.apgd, adversary.apgd_targeted):
        attack.n_iter, attack.n_iter_2, attack.n_iter_min, attack.size_decr = 10, 2, 1, 1
    adversary.fab.n_iter = 10
    adversary.square.n_queries = 100
    adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = 3
    theirs, _ = adversary.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        theirs_acc = (model(theirs).argmax(1) == y).float().mean().item()
    assert 0.05 < theirs_acc < 0.95
    assert abs(ours.robust_accuracy - theirs_acc) <= 1 / 96  # within one example


def test_registered_attack_and_presets(trained):
    model, x, y = trained
    x, y = x[:48], y[:48]
    attack = create_attack("autoattack", model, seed=0, eps=0.15, **SMALL)
    result = attack(x, y)
    direct = run_autoattack(model, x, y, 0.15, seed=0, **SMALL)
    assert torch.equal(result.x_adv, direct.x_adv)
    assert result.extras["accuracy"] == direct.accuracy
    assert result.backwards == sum(direct.backwards.values()) > 0  # the stages' passes
    res = evaluate_robustness(
        model, (x, y), {"autoattack": SMALL}, [0.15], preset="autoattack-standard", checks=False
    )
    assert res.accuracy["autoattack"][0.15] == pytest.approx(direct.robust_accuracy)


def test_bad_input(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="version must be one of standard, rand"):
        run_autoattack(model, x[:4], y[:4], 0.1, version="plus")
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        run_autoattack(model, x[:4], y[:4], 0.1, norm="L1")
    with pytest.raises(ValueError, match="'rand' version only"):
        create_attack("autoattack", model, eot_iter=4)(x[:4], y[:4])
    with pytest.raises(ValueError, match="preset"):
        evaluate_robustness(model, (x[:4], y[:4]), {}, [0.1], preset="autoattack-plus")
