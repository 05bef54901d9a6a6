"""train.precision (autocast + fp16 gradient scaler), train.channels_last and train.compile."""

import contextlib
import logging

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nettle.config import ConfigError, TrainConfig, config_hash, load_config_dict
from nettle.train.checkpoint import load_checkpoint
from nettle.train.loop import Trainer
from nettle.train.precision import MixedPrecision, check_precision

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, 6, 6, generator=g)  # 2 channels: NCHW and NHWC strides differ
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).long())


class Net(nn.Module):
    """Conv-BN-ReLU-Linear that records the dtype and memory format of what it sees."""

    def __init__(self, dropout=0.2):
        super().__init__()
        torch.manual_seed(0)
        self.dropout = dropout
        self.conv, self.bn, self.fc = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Linear(64, 2)
        self.seen = []

    def forward(self, x):
        h = self.conv(x)
        self.seen.append((h.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        h = nn.functional.dropout(torch.relu(self.bn(h)), self.dropout, self.training)
        return self.fc(h.flatten(1))


def _trainer(run_dir=None, data=None, dropout=0.2, **kw):
    base = {"epochs": 2, "device": "cpu", "tensorboard": False, "seed": 1}
    cfg = TrainConfig(**(base | {"optim": {"lr": 0.1}} | kw))
    return Trainer(Net(dropout), data or _data(), None, cfg, batch_size=16, run_dir=run_dir)


def _weights(t):
    return [v.clone() for v in t.model.state_dict().values()]


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_weights():
    t = _trainer(precision="bf16")
    summary = t.fit()
    assert summary["steps"] == 8 and t.amp.scaler is None
    assert {dtype for dtype, _ in t.model.seen} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    fp32 = _trainer()
    fp32.fit()
    assert {dtype for dtype, _ in fp32.model.seen} == {torch.float32}
    # other numbers, the same training: close but not equal
    a, b = t.model.fc.weight, fp32.model.fc.weight
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)


def _stop_after(trainer, steps):
    class Stop(Exception):
        pass

    def progress(event, info):
        if event == "step" and info["step"] == steps:
            raise Stop

    trainer.progress = progress
    with contextlib.suppress(Stop):
        trainer.fit()


def _eager_scaler(t):
    """A scaler that starts far too high and grows every 3 steps: steps are skipped, the
    scale falls and rises, so its state matters to the weights."""
    t.amp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30, growth_interval=3)
    return t


def test_fp16_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full = _eager_scaler(_trainer(tmp_path / "a", precision="fp16", checkpoint_steps=3))
    full.fit()
    assert full.amp.scaler.get_scale() < 2.0**30  # overflows happened: steps were skipped
    part = _eager_scaler(_trainer(tmp_path / "b", precision="fp16", checkpoint_steps=3))
    _stop_after(part, 4)  # killed after step 4: the checkpoint of step 3 is the last
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["scaler"]
    assert saved["scale"] < 2.0**30 and saved["growth_interval"] == 3
    resumed = _eager_scaler(_trainer(tmp_path / "b", precision="fp16", checkpoint_steps=3))
    assert resumed.resume() and resumed.state["step"] == 3
    assert resumed.amp.scaler.state_dict() == saved
    resumed.fit()
    assert resumed.amp.scaler.state_dict() == full.amp.scaler.state_dict()
    for a, b in zip(_weights(full), _weights(resumed)):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    # without the scaler's state the resumed run would not be the same run
    other = _eager_scaler(_trainer(tmp_path / "b", precision="fp16", checkpoint_steps=3))
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    other.load_state_dict({**ckpt, "scaler": {}})
    other.fit()
    assert other.amp.scaler.get_scale() != full.amp.scaler.get_scale()


def test_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    amp = MixedPrecision("fp16", "cpu")
    amp.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    t = _trainer(tmp_path, precision="fp16")
    t.amp = amp
    t.save()
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["scaler"]
    assert saved == {
        "scale": 1024.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 7,
        "_growth_tracker": 0,
    }
    fresh = MixedPrecision("fp16", "cpu")
    fresh.load_state_dict(saved)
    assert fresh.scaler.get_scale() == 1024.0 and fresh.scaler.get_growth_interval() == 7
    assert MixedPrecision("bf16", "cpu").state_dict() == {}  # no scaler, nothing saved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_scaler_state_survives_a_resume_on_cuda(tmp_path):
    def make(d):
        t = _trainer(d, precision="fp16", checkpoint_steps=3, device="cuda")
        t.amp.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**30, growth_interval=3)
        return t

    full = make(tmp_path / "a")
    full.fit()
    part = make(tmp_path / "b")
    _stop_after(part, 4)
    resumed = make(tmp_path / "b")
    assert resumed.resume() and resumed.state["step"] == 3
    resumed.fit()
    assert resumed.amp.scaler.state_dict() == full.amp.scaler.state_dict()
    for a, b in zip(_weights(full), _weights(resumed)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_precision_is_in_the_run_id_and_channels_last_and_compile_are_not():
    base = load_config_dict({})
    same = load_config_dict({"train": {"channels_last": True, "compile": True}})
    assert config_hash(same) == config_hash(base)
    assert config_hash(load_config_dict({"train": {"precision": "bf16"}})) != config_hash(base)
    with pytest.raises(ConfigError, match=r"train\.precision.*'fp32', 'bf16' or 'fp16'"):
        load_config_dict({"train": {"precision": "fp8"}})


def test_check_precision_refuses_in_one_line(monkeypatch):
    with pytest.raises(ValueError, match="^train.precision 'half': expected one of fp32, bf16"):
        check_precision("half", "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(ValueError) as info:
        check_precision("bf16", "cuda:0")
    assert str(info.value) == (
        "train.precision bf16: Tesla T4 has no bfloat16 arithmetic (compute capability 8.0 "
        "or later is needed); use fp16 or fp32"
    )
    check_precision("fp16", "cuda:0")  # fp16 runs on that card
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    check_precision("bf16", "cuda:0")


def test_channels_last_model_and_inputs_train_the_same_numbers():
    t = _trainer(channels_last=True, dropout=0.0)
    t.fit()
    assert t.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert {fmt for _, fmt in t.model.seen} == {True}
    plain = _trainer(dropout=0.0)
    plain.fit()
    assert {fmt for _, fmt in plain.model.seen} == {False}
    for a, b in zip(_weights(t), _weights(plain)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_channels_last_draws_another_dropout_mask_as_another_device_would():
    # elementwise dropout on a 4-D map draws in memory order: an equally likely other mask
    torch.manual_seed(0)
    nchw = nn.functional.dropout(torch.ones(2, 3, 4, 4), 0.5)
    torch.manual_seed(0)
    nhwc = nn.functional.dropout(torch.ones(2, 3, 4, 4).to(memory_format=torch.channels_last), 0.5)
    assert not torch.equal(nchw, nhwc)
    assert sorted(nchw.flatten().tolist()) == sorted(nhwc.flatten().tolist())


def test_compile_refused_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("Windows not yet supported for torch.compile\nmore")

    monkeypatch.setattr(torch, "compile", refuse)
    with caplog.at_level(logging.WARNING, "nettle.train.execution"):
        t = _trainer(compile=True)
    assert caplog.messages == [
        "torch.compile failed (RuntimeError: Windows not yet supported for torch.compile); "
        "training continues in eager mode"
    ]
    t.fit()
    eager = _trainer()
    eager.fit()
    for a, b in zip(_weights(t), _weights(eager)):
        assert torch.equal(a, b)
    assert "compile" not in t.summary()["phases"]


class FailingCompiled(nn.Module):
    """Stands for a compiled module whose first call fails inside the compiler, after
    touching the model's buffers and drawing random numbers."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        from torch._dynamo.exc import TorchRuntimeError

        self.model.bn.running_mean.add_(1.0)
        torch.rand(3)
        raise TorchRuntimeError("backend failed: no C++ compiler")


def test_compile_failing_on_the_first_step_reruns_it_eagerly(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", FailingCompiled)
    with caplog.at_level(logging.WARNING, "nettle.train.execution"):
        t = _trainer(compile=True)
        t.fit()
    assert t._compiled.failed == "TorchRuntimeError: backend failed: no C++ compiler"
    assert len(caplog.messages) == 1 and "eager mode" in caplog.messages[0]
    eager = _trainer()
    eager.fit()
    for a, b in zip(_weights(t), _weights(eager)):  # the failed attempt left nothing behind
        assert torch.equal(a, b)
    phases = t.summary()["phases"]
    assert set(phases) == {"data", "compile", "forward", "backward", "update"}
    # the first step, timed as a whole; no compilation is attempted after the fallback
    assert "compile" in t.history[0]["phases"] and "compile" not in t.history[1]["phases"]


@pytest.mark.slow
def test_compile_of_a_tiny_model_on_the_cpu_trains_the_same_numbers():
    data = _data(72)  # batches of 16, 16, 16, 16 and 8: two shapes, two compilations
    # no dropout: inductor draws its masks with its own generator (another, equally likely mask)
    t = _trainer(data=data, compile=True, epochs=1, dropout=0.0)
    t.fit()
    assert t._compiled.failed is None
    assert t.timer.stats()["compile"].count == 2
    assert t.timer.stats()["forward"].count == 3
    eager = _trainer(data=data, epochs=1, dropout=0.0)
    eager.fit()
    for a, b in zip(_weights(t), _weights(eager)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_attack_stage_runs_under_the_runs_precision(tmp_path):
    from nettle.experiment.evaluation import attack_settings, run_attack_stage

    cfg = load_config_dict({"evaluate": {"attacks": {"fgsm": {}}, "eps": [0.1]}})
    assert "precision" not in attack_settings(cfg)  # fp32 stages keep their keys
    bf16 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "bf16"})})
    settings = attack_settings(bf16)
    assert settings["precision"] == "bf16"
    model, data = Net(dropout=0.0).eval(), _data(8).tensors
    ckpt = tmp_path / "last.pt"
    path, record, cached = run_attack_stage(tmp_path, model, data, settings, ckpt, None, "0" * 64)
    assert not cached and record["settings"]["precision"] == "bf16"
    assert model.seen and {dtype for dtype, _ in model.seen} == {torch.bfloat16}
    model.seen.clear()
    fp32, _, _ = run_attack_stage(tmp_path, model, data, attack_settings(cfg), ckpt, None, "0" * 64)
    assert fp32 != path and {dtype for dtype, _ in model.seen} == {torch.float32}
