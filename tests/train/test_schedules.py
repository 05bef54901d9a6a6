import math

import pytest
import torch

from nettle.config import ScheduleConfig
from nettle.train.schedules import SCHEDULES, create_scheduler, lr_at


def test_step_schedule():
    cfg = ScheduleConfig(name="step", milestones=[0.5, 0.75], gamma=0.1)
    lrs = [lr_at(cfg, 100, 1.0, s) for s in (0, 49, 50, 74, 75, 99)]
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_cosine_with_warmup_and_floor():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr=0.01)
    # 10 steps per epoch: 10 warmup steps then 90 cosine steps
    assert lr_at(cfg, 100, 0.1, 0, 10) == pytest.approx(0.01)
    assert lr_at(cfg, 100, 0.1, 9, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 100, 0.1, 10, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 100, 0.1, 55, 10) == pytest.approx(
        0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 0.5))
    )
    assert lr_at(cfg, 100, 0.1, 100, 10) == pytest.approx(0.01)


def test_clr_triangles_then_annihilation():
    cfg = ScheduleConfig(name="clr", min_lr=0.1, max_lr=1.0, cycles=2, annihilation=0.2)
    total = 100  # 80 cyclical steps (two triangles of 40), then 20 annihilation steps
    at = [lr_at(cfg, total, 1.0, s) for s in (0, 20, 40, 60, 79, 80, 90, 100)]
    assert at[0] == pytest.approx(0.1) and at[1] == pytest.approx(1.0)
    assert at[2] == pytest.approx(0.1) and at[3] == pytest.approx(1.0)
    assert at[5] == pytest.approx(0.1)
    assert at[6] == pytest.approx(0.1 + (0.001 - 0.1) * 0.5)
    assert at[7] == pytest.approx(0.001)


def test_onecycle_wraps_torch_and_lambda_state_roundtrip():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = create_scheduler(opt, ScheduleConfig(name="onecycle", max_lr=1.0), 10)
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    opt2 = torch.optim.SGD([p], lr=0.1)
    s2 = create_scheduler(opt2, ScheduleConfig(name="cosine"), 10)
    for _ in range(3):
        opt2.step()
        s2.step()
    state = s2.state_dict()
    opt3 = torch.optim.SGD([p], lr=0.1)
    s3 = create_scheduler(opt3, ScheduleConfig(name="cosine"), 10)
    s3.load_state_dict(state)
    opt3.param_groups[0]["lr"] = opt2.param_groups[0]["lr"]
    s2.step()
    s3.step()
    assert opt2.param_groups[0]["lr"] == opt3.param_groups[0]["lr"]


@pytest.mark.parametrize(("total", "pct"), [(10, 0.3), (97, 0.25), (400, 0.5)])
def test_onecycle_values_are_torch_values(total, pct):
    cfg = ScheduleConfig(name="onecycle", max_lr=0.8, pct_start=pct)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = create_scheduler(opt, cfg, total)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(cfg, total, 0.1, step), rel=1e-12)
        opt.step()
        if step < total - 1:
            sched.step()
    assert lr_at(cfg, total, 0.1, 0) == pytest.approx(0.8 / 25)
    assert lr_at(cfg, total, 0.1, total - 1) == pytest.approx(0.8 / 25 / 1e4)


def test_clr_slopes_and_default_low_end():
    # one triangle over 90 steps (45 up, 45 down), then 10 annihilation steps
    cfg = ScheduleConfig(name="clr", max_lr=2.0, cycles=1, annihilation=0.1)
    low = 0.2  # min_lr 0: a tenth of max_lr
    assert lr_at(cfg, 100, 1.0, 0) == pytest.approx(low)
    assert lr_at(cfg, 100, 1.0, 9) == pytest.approx(low + (2.0 - low) * 18 / 90)
    assert lr_at(cfg, 100, 1.0, 45) == pytest.approx(2.0)
    assert lr_at(cfg, 100, 1.0, 81) == pytest.approx(low + (2.0 - low) * 18 / 90)
    assert lr_at(cfg, 100, 1.0, 95) == pytest.approx(low + (low / 100 - low) * 0.5)


def test_warmup_then_step():
    cfg = ScheduleConfig(name="step", warmup_epochs=0.5, milestones=[0.5], gamma=0.5)
    # 20 steps per epoch, 10 warmup steps, then 90 steps with one drop at 45
    lrs = [lr_at(cfg, 100, 0.4, s, 20) for s in (0, 4, 9, 10, 54, 55, 99)]
    assert lrs == pytest.approx([0.04, 0.2, 0.4, 0.4, 0.4, 0.2, 0.2])


def test_every_schedule_is_registered():
    assert sorted(SCHEDULES.names()) == ["clr", "constant", "cosine", "onecycle", "step"]
