import pytest
import torch
from torch import nn

from nettle.compress.decay import compressed_parameters, compression_ratio, scaled_decay_groups


class LowRank1x1(nn.Module):
    """A toy substitute: a depthwise conv (normal decay) and two factors (compressed)."""

    def __init__(self, c: int, rank: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.u = nn.Parameter(torch.randn(rank, c))
        self.v = nn.Parameter(torch.randn(c, rank))

    def compressed_parameters(self):
        return [self.u, self.v]

    def forward(self, x):
        x = self.depthwise(x)
        return torch.einsum("oc,nchw->nohw", self.v @ self.u, x)


def _net(sub: bool) -> nn.Module:
    body = LowRank1x1(8, 2) if sub else nn.Conv2d(8, 8, 3, padding=1, bias=False)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), body, nn.Linear(8, 2))


def test_ratio_by_hand():
    # dense: 216 + 8 (stem) + 16 (BN) + 576 + 18 (FC) = 834; substituted: 224 + 16 + 72 + 32 + 18 = 362
    assert compression_ratio(_net(True), _net(False)) == pytest.approx(362 / 834)


def test_groups_scale_only_compressed_parameters():
    model = _net(True)
    ratio = compression_ratio(model, _net(False))
    groups, plan = scaled_decay_groups(model, 5e-4, ratio)
    assert [g["weight_decay"] for g in groups] == [5e-4, pytest.approx(ratio * 5e-4)]
    assert {id(p) for p in groups[1]["params"]} == {id(model[2].u), id(model[2].v)}
    assert plan.compressed_params == 32
    assert plan.other_params == 362 - 32
    opt = torch.optim.SGD(groups, lr=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_plain_decay_when_nothing_is_compressed_or_disabled():
    dense = _net(False)
    groups, plan = scaled_decay_groups(dense, 5e-4, compression_ratio(dense, _net(False)))
    assert len(groups) == 1 and groups[0]["weight_decay"] == 5e-4 and plan.ratio == 1.0
    sub = _net(True)
    groups, plan = scaled_decay_groups(sub, 5e-4, 0.5, enabled=False)
    assert len(groups) == 1 and plan.compressed_decay == 5e-4
    assert compressed_parameters(dense) == []


def test_bad_ratio():
    with pytest.raises(ValueError, match="must be positive"):
        scaled_decay_groups(_net(True), 5e-4, 0.0)
