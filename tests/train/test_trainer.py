import contextlib
import json

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from nettle.config import AugmentConfig, TrainConfig
from nettle.train.augment import build_augment
from nettle.train.loop import Trainer, evaluate
from nettle.train.objectives import CrossEntropy


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    return TensorDataset(x, y)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(64, 2),
    )


def _cfg(**kw):
    base = {
        "epochs": 3,
        "device": "cpu",
        "tensorboard": False,
        "seed": 1,
        "optim": {"lr": 0.1},
        "schedule": {"name": "cosine"},
    }
    return TrainConfig(**(base | kw))


def _trainer(run_dir=None, **kw):
    aug = build_augment(AugmentConfig(crop_padding=1, flip=True))
    return Trainer(
        _model(), _data(), _data(32, 1), _cfg(**kw), batch_size=16, run_dir=run_dir, augment=aug
    )


def test_fit_records_phases_metrics_and_best(tmp_path):
    t = _trainer(tmp_path, tensorboard=True)
    summary = t.fit()
    assert summary["status"] == "done" and summary["steps"] == 18
    assert set(summary["phases"]) == {"data", "forward", "backward", "update"}
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert {"phase_forward", "phase_forward_share", "phase_forward_median"} <= set(epochs[-1])
    assert {"test_acc", "train_loss", "lr", "time"} <= set(epochs[-1])
    last = t.history[-1]
    assert sum(last["phase_shares"].values()) == pytest.approx(1.0)
    assert last["phase_shares"]["forward"] == pytest.approx(
        last["phases"]["forward"] / sum(last["phases"].values())
    )
    assert set(last["phase_medians"]) == set(last["phases"])
    # 6 steps an epoch, each phase once a step: the median is at most the total / 6 * 6
    for name, secs in last["phases"].items():
        assert 0 < last["phase_medians"][name] <= secs
    assert t.timer.stats()["data"].count == 6  # one data phase per batch, none extra
    steps = [r for r in lines if r["kind"] == "step"]
    assert steps == []  # log_every 50 > 18 steps
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert list((tmp_path / "tb").iterdir())
    assert t.history[-1]["test_acc"] == evaluate(t.model, _data(32, 1))["acc"]


def test_resume_mid_epoch_is_bit_exact(tmp_path):
    full = _trainer(tmp_path / "a", checkpoint_steps=4)
    full.fit()
    # a second run, stopped after step 8 (a checkpoint in the middle of epoch 1 of 0..2)
    part = _trainer(tmp_path / "b", checkpoint_steps=4)
    part.cfg = part.cfg.model_copy(update={"epochs": 3})
    real_step = part._step
    calls = [0]

    class Stop(Exception):
        pass

    def step_then_stop(*args, **kwargs):
        real_step(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 10:
            raise Stop

    part._step = step_then_stop
    with contextlib.suppress(Stop):
        part.fit()
    resumed = _trainer(tmp_path / "b", checkpoint_steps=4)
    assert resumed.resume() and resumed.state["step"] == 8
    resumed.fit()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(s)["epoch"] for s in lines if json.loads(s)["kind"] == "epoch"]
    assert epochs == [1, 2, 3]  # no duplicated records after the resume


class ListData(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


def test_dataloader_path_matches_tensor_path():
    a = Trainer(_model(), _data(), None, _cfg(epochs=1), batch_size=16)
    a.fit()
    b = Trainer(_model(), ListData(_data()), None, _cfg(epochs=1), batch_size=16)
    b.fit()
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(x, y)


class TensorsOnly(Dataset):
    """An in-memory set that is not a TensorDataset but exposes `.tensors`."""

    def __init__(self, base):
        self.tensors = base.tensors

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, i):
        raise AssertionError("in-memory sets are batched by indexing, not item by item")


def test_in_memory_sets_are_batched_by_indexing():
    a = Trainer(_model(), _data(), None, _cfg(epochs=1), batch_size=16)
    a.fit()
    b = Trainer(_model(), TensorsOnly(_data()), None, _cfg(epochs=1), batch_size=16)
    b.fit()
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)


def test_step_records_every_log_every_steps(tmp_path):
    _trainer(tmp_path, log_every=4, epochs=1).fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "step"] == [4]
    assert [r["kind"] for r in lines] == ["step", "epoch"]


def test_trains_a_small_cnn_on_digits():
    from nettle.models import create_model
    from nettle.train.data import create_dataset, get_dataset_info

    info = get_dataset_info("digits")
    torch.manual_seed(0)
    model = create_model("simple-cnn", in_channels=1, mean=info.mean, std=info.std, width=8)
    t = Trainer(
        model,
        create_dataset("digits"),
        create_dataset("digits", "test"),
        _cfg(epochs=3, optim={"lr": 0.1}),
        batch_size=32,
    )
    assert t.fit()["final"]["test_acc"] >= 0.95


class RecordingCE(CrossEntropy):
    """Cross-entropy that records its epoch hooks."""

    def __init__(self):
        super().__init__()
        self.epochs_started = []

    def on_epoch_start(self, epoch, epochs):
        self.epochs_started.append((epoch, epochs))


def test_epoch_hooks_run_again_when_resuming_inside_an_epoch(tmp_path):
    class Stop(Exception):
        pass

    def stop_at_step_8(event, info):
        if event == "step" and info["step"] == 8:
            raise Stop

    first = _trainer(tmp_path, checkpoint_steps=8)
    first.progress = stop_at_step_8
    with contextlib.suppress(Stop):
        first.fit()
    second = _trainer(tmp_path, checkpoint_steps=8)
    second.objective = RecordingCE()
    assert second.resume() and (second.state["epoch"], second.state["batch"]) == (1, 2)
    second.fit()
    assert second.objective.epochs_started == [(1, 3), (2, 3)]
