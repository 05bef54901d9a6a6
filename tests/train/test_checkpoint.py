import pickle

import pytest
import torch

from nettle.train.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def test_roundtrip_and_no_temp_files(tmp_path):
    path = save_checkpoint({"model": {"w": torch.arange(3)}, "x": [1, 2.5, "a"]}, tmp_path / "c.pt")
    assert load_checkpoint(path)["x"] == [1, 2.5, "a"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncated_file_names_the_file(tmp_path):
    path = save_checkpoint({"model": {"w": torch.randn(1000)}}, tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"last\.pt: unreadable checkpoint \(truncated or corrupt"
    ):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="evil.pt: unreadable checkpoint"):
        load_checkpoint(path)


def test_rng_roundtrip_through_a_checkpoint(tmp_path):
    import random

    import numpy as np

    g = torch.Generator().manual_seed(3)
    torch.rand(5, generator=g)
    state = capture_rng(g)
    path = save_checkpoint({"model": {}, "rng": state}, tmp_path / "r.pt")
    expect = (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=g))
    g2 = torch.Generator()
    restore_rng(load_checkpoint(path)["rng"], g2)
    got = (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=g2))
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1])
    assert expect[2] == got[2] and torch.equal(expect[3], got[3])


def _trained(run_dir):
    from torch import nn
    from torch.utils.data import TensorDataset

    from nettle.config import TrainConfig
    from nettle.train.loop import Trainer

    data = TensorDataset(torch.rand(32, 4), torch.randint(0, 2, (32,)))
    cfg = TrainConfig(epochs=1, device="cpu", tensorboard=False)
    trainer = Trainer(nn.Linear(4, 2), data, None, cfg, batch_size=8, run_dir=run_dir)
    trainer.fit()
    return trainer


def test_a_truncated_trainer_checkpoint_is_refused_by_name(tmp_path):
    trainer = _trained(tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert {"model", "optimizer", "scheduler", "rng", "state", "history", "config"} <= set(ckpt)
    assert ckpt["state"]["step"] == 4 and ckpt["format"] == 1
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{last}: unreadable checkpoint"):
        trainer.resume()


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint({"model": {"w": torch.zeros(3)}}, tmp_path / "last.pt")
    before = path.read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left
