"""A trained model from a run dir: a checkpoint of another model is one clear error."""

import pytest
import torch

from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment
from nettle.models import create_model
from nettle.models.build import build_model, load_run_model, load_teacher


def test_a_checkpoint_of_another_model_is_named_not_a_traceback(tmp_path):
    cfg = load_config_dict(
        {
            "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
            "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
        }
    )
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir)
    trained = load_run_model(run_dir)
    assert sum(p.numel() for p in trained.parameters()) == sum(
        p.numel() for p in create_model("simple-cnn", in_channels=1, width=4).parameters()
    )
    wider = build_model(load_config_dict({"model": {"name": "simple-cnn", "kwargs": {"width": 8}}}))
    best = run_dir / "checkpoints" / "best.pt"
    torch.save({"model": wider.state_dict(), "config": cfg.model_dump(mode="json")}, best)
    with pytest.raises(ValueError, match=r"best\.pt: its weights do not fit .* of another shape"):
        load_run_model(run_dir)
    with pytest.raises(ValueError, match=r"best\.pt: its weights do not fit"):
        load_teacher(best)
    torch.save({"model": [1, 2]}, best)
    with pytest.raises(ValueError, match=r"best\.pt: not a nettle checkpoint \(no model state\)"):
        load_run_model(run_dir)
