"""TensorBoard's HParams view gets every run's config and final metrics at its end."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment


def test_hparams_hold_the_config_and_the_final_metrics(tmp_path):
    cfg = load_config_dict(
        {
            "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
            "train": {"epochs": 1, "device": "cpu", "optim": {"lr": 0.03}},
        }
    )
    summary = run_experiment(cfg, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["train.optim.lr"].number_value == pytest.approx(0.03)
    assert hparams["model.name"].string_value == "simple-cnn"
    assert hparams["train.deterministic"].number_value == 1  # TensorBoard stores bools as 0/1
    (acc,) = events.Scalars("hparam/test_acc")
    assert acc.value == pytest.approx(summary["final"]["test_acc"])
