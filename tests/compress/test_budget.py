import pytest
from torch import nn

from nettle.compress.budget import solve_budget
from nettle.nn.substitutes import parse_spec


def _lowrank_net(conv: str) -> nn.Module:
    """A stand-in network: 8 low-rank 512x512 maps of rank floor(r * 512) + a dense head."""
    _, r = parse_spec(conv)
    rank = max(1, int(r * 512))
    layers = []
    for _ in range(8):
        layers += [nn.Linear(512, rank, bias=False), nn.Linear(rank, 512, bias=False)]
    return nn.Sequential(*layers, nn.Linear(512, 10))


def _grouped_net(conv: str) -> nn.Module:
    """A stand-in whose cost falls with an integer setting (groups), like ShuffleNet."""
    _, g = parse_spec(conv)
    groups = max(d for d in range(1, int(g) + 1) if 64 % d == 0)
    return nn.Sequential(*[nn.Conv1d(64, 64, 1, groups=groups, bias=False) for _ in range(4)])


@pytest.mark.parametrize("budget", [1e6, 1.5e6, 2e6, 3e6, 4e6])
def test_five_budgets_met_within_one_percent(budget):
    result = solve_budget(_lowrank_net, "Generic", budget)
    assert result.reachable
    assert abs(result.relative_error) < 0.01, result
    assert result.params == sum(p.numel() for p in _lowrank_net(result.conv).parameters())
    assert result.conv.startswith("generic_")
    assert result.evaluations <= 60


def test_unreachable_budget_is_reported():
    low = solve_budget(_lowrank_net, "Generic", 1000)
    assert not low.reachable and low.setting == pytest.approx(1e-3)
    high = solve_budget(_lowrank_net, "Generic", 1e8)
    assert not high.reachable and high.setting == 1.0


def test_integer_setting_with_decreasing_cost():
    # cost = 4 * 64 * 64 / g; budget 4096 -> g = 4 exactly
    result = solve_budget(_grouped_net, "Shuffle", 4096)
    assert result.conv == "shuffle_4" and result.achieved == 4096 and result.reachable


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="without a setting"):
        solve_budget(_lowrank_net, "Generic_0.1", 1e5)
    with pytest.raises(ValueError, match="no budget search for substitute 'Sep'"):
        solve_budget(_lowrank_net, "Sep", 1e5)
    with pytest.raises(ValueError, match="needs the input shape"):
        solve_budget(_lowrank_net, "Generic", 1e5, metric="macs")


@pytest.mark.parametrize(
    ("conv", "budget"),
    [
        ("Generic", 3e5),
        ("SepHashed", 2e5),
        ("TensorTrain", 2.5e5),
        ("Tucker", 3e5),
        ("Hashed", 1e6),
    ],
)
def test_real_network_budgets_within_one_percent(conv, budget):
    import torch

    from nettle.models import create_model

    def build(spec):
        with torch.device("meta"):
            return create_model("wrn-16-4", conv=spec)

    result = solve_budget(build, conv, budget)
    assert result.reachable and abs(result.relative_error) < 0.01, result


def test_count_cli_budget_json(capsys):
    import json

    from nettle.cli import main

    assert main(["count", "wrn-16-4", "--conv", "Generic", "--budget", "3e5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"]["reachable"] and abs(out["params"] - 3e5) / 3e5 < 0.01
    assert out["budget"]["conv"].startswith("generic_")
    assert main(["count", "wrn-16-4", "--budget", "3e5"]) == 2
    assert "--budget needs --conv" in capsys.readouterr().err
