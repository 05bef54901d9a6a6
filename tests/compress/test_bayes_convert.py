"""Converting any network to group normal-Jeffreys layers, through the config and a run."""

import json

import pytest
import torch
from torch import nn

from nettle.compress.bayes_convert import convert_to_bayesian, prepare_bayesian
from nettle.config import BayesConfig, ConfigError, load_config_dict
from nettle.models import create_model
from nettle.models.build import build_model
from nettle.nn.bayesian import BayesianLayer, Conv2dGroupNJ, LinearGroupNJ
from nettle.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),  # 4x4 -> 2x2
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def test_converted_parameter_count_is_the_dense_count_plus_the_variational_parameters():
    model = _tiny()
    # dense: conv 2*1*9 + 2 = 20, BN 4, linear 8*3 + 3 = 27
    assert _count(model) == 51
    x = torch.rand(5, 1, 4, 4)
    reference = model.eval()(x)
    report = convert_to_bayesian(model)
    # conv: + 18 weight log-variances + 2 bias log-variances + 2 z_mu + 2 z_logvar = 24
    # linear: + 24 weight log-variances + 3 bias log-variances + 8 z_mu + 8 z_logvar = 43
    assert _count(model) == 51 + 24 + 43
    assert report.converted == ["0", "4"] and report.clipped == ["0"] and report.left == {}
    assert isinstance(model[0], Conv2dGroupNJ) and isinstance(model[4], LinearGroupNJ)
    assert (model[0].clip_var, model[4].clip_var) == (0.04, None)
    torch.testing.assert_close(model.eval()(x), reference)  # the means are the dense weights


def test_clip_all_and_no_clip():
    model = _tiny()
    assert convert_to_bayesian(model, 0.1, "all").clipped == ["0", "4"]
    assert model[4].clip_var == 0.1
    assert convert_to_bayesian(_tiny(), None).clipped == []
    with pytest.raises(ValueError, match="clip must be 'first' or 'all'"):
        convert_to_bayesian(_tiny(), 0.1, "some")


def test_substitutes_and_their_inner_layers_are_left_alone():
    model = create_model("simple-cnn", num_classes=10, in_channels=1, conv="Sep")
    subs = {"stage1.0": model.stage1[0], "stage2.0": model.stage2[0]}
    before = {n: [p.clone() for p in m.parameters()] for n, m in subs.items()}
    report = convert_to_bayesian(model)
    assert report.converted == ["stem.0", "fc"]
    assert report.left == {n: "substitute Separable" for n in subs}
    for name, module in subs.items():
        assert dict(model.named_modules())[name] is module
        assert not any(isinstance(m, BayesianLayer) for m in module.modules())
        for p, q in zip(module.parameters(), before[name]):
            assert torch.equal(p, q)


def test_subclasses_of_linear_keep_their_type():
    attention = nn.MultiheadAttention(4, 1)
    model = nn.Sequential(nn.Linear(4, 4), attention)
    assert convert_to_bayesian(model).converted == ["0"]
    assert type(attention.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


def test_padding_modes_other_than_zeros_are_reported():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Conv2d(2, 2, 1)
    )
    report = convert_to_bayesian(model)
    assert report.converted == ["1"] and report.left == {"0": "padding_mode circular"}


def test_a_model_with_nothing_to_convert_is_refused_in_one_line():
    with pytest.raises(ValueError) as err:
        prepare_bayesian(nn.Sequential(nn.Flatten()), BayesConfig(convert=True), "flat")
    message = str(err.value)
    assert (
        message
        == "bayes.convert: model 'flat' has no nn.Linear or nn.Conv2d outside substitutes to convert"
    )
    bayesian = nn.Sequential(LinearGroupNJ(2, 2))
    with pytest.raises(ValueError, match="'b' is Bayesian already; set bayes.convert: false"):
        prepare_bayesian(bayesian, BayesConfig(convert=True), "b")
    with pytest.raises(ValueError, match="has no Bayesian layers; set bayes.convert: true"):
        prepare_bayesian(nn.Sequential(nn.Linear(2, 2)), BayesConfig(), "plain")


def test_negative_warmup_is_refused_naming_the_field():
    with pytest.raises(ConfigError) as err:
        load_config_dict({"bayes": {"kl_warmup_epochs": -1}})
    assert "bayes.kl_warmup_epochs" in str(err.value) and "\n" not in str(err.value)


def test_build_model_converts_and_keeps_loaded_weights_as_means(tmp_path):
    dense = create_model("simple-cnn", num_classes=10, in_channels=1)
    torch.nn.init.normal_(dense.fc.weight)
    torch.save(dense.state_dict(), tmp_path / "w.pt")
    cfg = load_config_dict(
        {
            "model": {"name": "simple-cnn", "weights": str(tmp_path / "w.pt")},
            "bayes": {"convert": True},
        }
    )
    model = build_model(cfg)
    net = model.net  # inside the input normalisation
    torch.testing.assert_close(net.fc.weight_mu, dense.fc.weight)
    torch.testing.assert_close(net.stem[0].weight_mu, dense.stem[0].weight)
    assert model.bayes_conversion["converted"] == [
        "net.stem.0",
        "net.stage1.0",
        "net.stage2.0",
        "net.fc",
    ]


def test_a_refused_conversion_writes_nothing(tmp_path):
    from nettle.experiment.run import run_experiment

    cfg = load_config_dict(
        {"model": {"name": "bayes-lenet"}, "bayes": {"convert": True}, "train": {"device": "cpu"}}
    )
    with pytest.raises(ConfigError, match="is Bayesian already") as err:
        run_experiment(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_converted_run_warms_up_the_kl_reports_and_draws(tmp_path):
    from nettle.experiment.run import run_experiment

    cfg = load_config_dict(
        {
            "name": "bayes-convert",
            "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
            "data": {"subset": 64, "batch_size": 32},
            "bayes": {"convert": True, "kl_warmup_epochs": 2, "record_every": 1},
            "train": {
                "epochs": 3,
                "device": "cpu",
                "tensorboard": False,
                "log_every": 1,
                "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
            },
        }
    )
    summary = run_experiment(cfg, tmp_path / "run")
    steps = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"kind": "step"' in line
    ]
    assert [(s["epoch"], s["kl_weight"]) for s in steps] == [
        (1, 0.0),
        (1, 0.0),
        (2, 0.5),
        (2, 0.5),
        (3, 1.0),
        (3, 1.0),
    ]
    bayes = summary["bayes"]
    assert [row["name"] for row in bayes["layers"]] == [
        "net.stem.0",
        "net.stage1.0",
        "net.stage2.0",
        "net.fc",
    ]
    assert 0.0 <= bayes["accuracy_pruned"] <= 1.0 and 0.0 <= bayes["accuracy_reduced"] <= 1.0
    assert summary["bayes_conversion"]["clipped"] == ["net.stem.0"]
    assert (tmp_path / "run" / "bayes" / "evolution.png").is_file()
    assert bayes["evolution"]["gif"] == str(tmp_path / "run" / "bayes" / "evolution.gif")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["objective"]
    assert [f["epoch"] for f in state["evolution"]] == [0, 1, 2]
    assert state["evolution"][0]["weight_mu"].shape == (4, 1, 3, 3)


def test_the_example_trains_and_the_cli_prints_the_report(tmp_path, capsys):
    from nettle.cli import main

    overrides = ["train.epochs=1", "data.subset=64", "model.kwargs.width=4", "train.log_every=1"]
    args = ["train", "examples/bayes-vgg-digits.yaml", "-o", str(tmp_path / "run")]
    args += ["--store", str(tmp_path / "runs.db")]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    first = summary["bayes"]["text"].splitlines()[0]
    assert first.startswith("architecture compression factor ") and first in out
    assert "net.stage2.0" in out  # the per-layer table
    assert summary["bayes_conversion"]["converted"][-1] == "net.fc"


def test_a_sweep_over_the_warmup_plans_distinct_runs_and_recording_is_not_in_the_id():
    from nettle.config import config_hash
    from nettle.experiment.spec import plan_sweep

    plan = plan_sweep(
        {
            "name": "bayes-sweep",
            "base": {"bayes": {"convert": True}, "train": {"epochs": 2}},
            "grid": {"bayes.kl_warmup_epochs": [0, 1, 2]},
        }
    )
    assert [r.config.bayes.kl_warmup_epochs for r in plan.runs] == [0, 1, 2]
    assert len({r.id for r in plan.runs}) == 3
    every = [load_config_dict({"bayes": {"convert": True, "record_every": n}}) for n in (1, 5)]
    assert config_hash(every[0]) == config_hash(every[1])  # an execution setting
