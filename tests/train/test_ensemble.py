import torch

from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment
from nettle.train.data import create_dataset
from nettle.train.ensemble import ensemble_accuracy, ensemble_predict, load_snapshots


def test_snapshots_at_lr_minima_and_ensemble(tmp_path):
    cfg = load_config_dict(
        {
            "name": "snap",
            "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
            "train": {
                "epochs": 4,
                "device": "cpu",
                "tensorboard": False,
                "snapshots": True,
                "schedule": {"name": "clr", "cycles": 2, "annihilation": 0.25, "max_lr": 0.1},
            },
        }
    )
    run_experiment(cfg, tmp_path / "run")
    steps = sorted(
        int(p.stem.split("step")[1]) for p in (tmp_path / "run" / "checkpoints").glob("snapshot-*")
    )
    total = 4 * 23  # 1437 digits / 64 per batch -> 23 batches per epoch
    # two triangles over the first 75% of training: a low point between them, and the end
    assert len(steps) == 2 and steps[-1] == total and steps[0] == round(total * 0.75 / 2) + 1
    models = load_snapshots(tmp_path / "run")
    x, y = create_dataset("digits", "test").tensors
    probs = ensemble_predict(models, x)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(x)))
    single = ensemble_accuracy(models[-1:], x, y)
    assert ensemble_accuracy(models, x, y) >= single - 0.02
