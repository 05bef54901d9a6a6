"""Pretrained weights: safe reading, key renames, the load report, verification, the sha256
pin, and runs that start from a weights file (refused with one line when it is broken)."""

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from nettle.cli import main
from nettle.config import ConfigError, ModelConfig, load_config_dict
from nettle.models import create_model
from nettle.models.build import build_model, load_run_model, resolve_weights
from nettle.models.weights import (
    file_sha256,
    load_pretrained,
    load_state,
    map_keys,
    read_weights,
    verify_outputs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A torchvision ResNet-18 (10 classes): its state dict, 8 inputs and its outputs on them."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    net = resnet18(num_classes=10).eval()
    x = torch.rand(8, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
    torch.save(net.state_dict(), folder / "resnet18.pt")
    torch.save(x, folder / "inputs.pt")
    torch.save(y, folder / "outputs.pt")
    torch.save(y + 0.5, folder / "wrong.pt")
    return folder


def _tiny():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))


def test_renames_apply_in_order(tmp_path):
    (tmp_path / "map.yaml").write_text("features.: body.\n")
    rules = ModelConfig.WeightsMap(
        ignore=["module.head."],
        strip_prefix="module.",
        rename={"features.0.": "stem.", "fc.": "classifier."},
        file=str(tmp_path / "map.yaml"),
        add_prefix="net.",
    )
    state = {f"module.{k}": torch.zeros(1) for k in ("features.0.w", "features.3.w", "fc.b")}
    state["module.head.w"] = torch.zeros(1)
    assert list(map_keys(state, rules)) == ["net.stem.w", "net.body.3.w", "net.classifier.b"]
    with pytest.raises(ValueError, match="two of the file's tensors become 'net.x'"):
        map_keys(
            {"a.x": torch.zeros(1), "b.x": torch.zeros(1)},
            ModelConfig.WeightsMap(rename={"a.": "", "b.": ""}, add_prefix="net."),
        )


def test_reads_state_dicts_and_nettle_checkpoints(tmp_path):
    state = {"0.weight": torch.ones(2, 1, 3, 3)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"format": 1, "model": state, "state": {"epoch": 3}}, tmp_path / "ckpt.pt")
    for name in ("plain.pt", "ckpt.pt"):
        assert torch.equal(read_weights(tmp_path / name)["0.weight"], state["0.weight"])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "truncated or corrupt"),
        (b"not weights at all", "a text file"),
        (pickle.dumps(print), "a plain pickle"),
        ("module", "loading it would call torch.nn.modules.linear.Linear"),
        ("list", "holds no state dict"),
    ],
)
def test_unreadable_weights_are_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / "w.pt"
    if content in ("module", "list"):
        torch.save(nn.Linear(1, 1) if content == "module" else [torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_weights(path)
    message = str(info.value)
    assert message.startswith(f"model.weights: {path}") and words in message
    assert "\n" not in message


def test_load_report_into_the_wrapped_network():
    torch.manual_seed(0)
    source = create_model("torchvision:resnet18", 10, in_channels=3)
    state = source.state_dict()
    state["fc.weight"] = torch.zeros(5, 512)  # another classifier
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.bn1.running_var"]
    model = create_model("torchvision:resnet18", 10, in_channels=1, mean=[0.5], std=[0.2])
    report = load_state(model, state, "w.pt")
    assert report.into == "net." and report.loaded == len(state) - 2
    assert report.missing == ["layer1.0.bn1.running_var"]
    assert report.unexpected == ["extra.weight"]
    assert report.reshaped == ["fc.weight (5, 512) vs (10, 512)"]
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match=r"none of its 1 tensors fits the model .*'nope'"):
        load_state(model, {"nope": torch.zeros(1)}, "w.pt")


def test_verify_compares_outputs(saved):
    net = resnet18(num_classes=10)
    net.load_state_dict(torch.load(saved / "resnet18.pt", weights_only=True))
    net.train()
    good = ModelConfig.Verify(inputs=str(saved / "inputs.pt"), outputs=str(saved / "outputs.pt"))
    result = verify_outputs(net, good)
    assert result["inputs"] == 8 and result["max_abs_error"] <= 1e-5 and net.training
    bad = good.model_copy(update={"outputs": str(saved / "wrong.pt")})
    with pytest.raises(ValueError, match=r"max abs error 0\.5 > atol 0\.001"):
        verify_outputs(net, bad)
    shaped = good.model_copy(update={"outputs": str(saved / "inputs.pt")})
    with pytest.raises(ValueError, match=r"outputs of shape \(8, 3, 8, 8\), the model gives"):
        verify_outputs(net, shaped)


def _cfg(saved, **model):
    tree = {
        "name": "pre",
        "model": {"name": "torchvision:resnet18", "weights": str(saved / "resnet18.pt"), **model},
        "data": {"subset": 32, "batch_size": 16, "eval_batch_size": 512},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False, "log_every": 1},
    }
    return load_config_dict(tree)


def test_resolve_pins_the_sha256_and_a_changed_file_is_refused(saved, tmp_path):
    cfg = resolve_weights(_cfg(saved))
    assert cfg.model.weights_sha256 == file_sha256(saved / "resnet18.pt")
    report = build_model(cfg).weights_report
    assert report["into"] == "net." and report["loaded"] == 122 and report["missing"] == []
    copy = tmp_path / "copy.pt"
    copy.write_bytes((saved / "resnet18.pt").read_bytes())
    pinned = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": str(copy)})})
    torch.save({"fc.bias": torch.zeros(10)}, copy)
    with pytest.raises(ValueError, match="changed since the run was planned"):
        build_model(pinned)
    with pytest.raises(ConfigError, match="not the .* of model.weights_sha256"):
        resolve_weights(pinned)
    with torch.device("meta"):  # planning builds read nothing
        assert not hasattr(build_model(pinned), "weights_report")


def test_weight_options_need_weights():
    with pytest.raises(ConfigError, match="model.verify needs model.weights"):
        load_config_dict({"model": {"verify": {"inputs": "a", "outputs": "b"}}})


def _write(tmp_path, saved, weights=None, outputs="outputs.pt"):
    path = tmp_path / "cfg.yaml"
    model = {
        "name": "torchvision:resnet18",
        "weights": str(weights or saved / "resnet18.pt"),
        "verify": {"inputs": str(saved / "inputs.pt"), "outputs": str(saved / outputs)},
    }
    data = {"subset": 32, "batch_size": 16}
    train = {"epochs": 1, "device": "cpu", "tensorboard": False}
    tree = {"name": "pre", "model": model, "data": data, "train": train}
    path.write_text(json.dumps(tree | {"evaluate": {"count": None}}))
    return path


def test_train_from_verified_weights(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(_write(tmp_path, saved)), "-o", "run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "done" and summary["epochs"] == 1
    weights = summary["weights"]
    assert weights["verify"]["max_abs_error"] <= 1e-5 and weights["loaded"] == 122
    assert weights["sha256"] == file_sha256(saved / "resnet18.pt")
    saved_cfg = (Path("run") / "config.yaml").read_text()
    assert f"weights_sha256: {weights['sha256']}" in saved_cfg
    # the trained run reloads from its checkpoint alone (attack, inspect)
    model = load_run_model("run")
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("corrupt", r"^nettle train: error: model.weights: .*corrupt.pt: unreadable checkpoint"),
        ("outputs", r"^nettle train: error: model.verify: .* max abs error 0.5 > atol 0.001$"),
    ],
)
def test_broken_weights_refuse_the_run(saved, tmp_path, monkeypatch, capsys, bad, words):
    monkeypatch.chdir(tmp_path)
    if bad == "corrupt":
        (tmp_path / "corrupt.pt").write_bytes((saved / "resnet18.pt").read_bytes()[:5000])
        config = _write(tmp_path, saved, weights=tmp_path / "corrupt.pt")
    else:
        config = _write(tmp_path, saved, outputs="wrong.pt")
    assert main(["train", str(config), "-o", "run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.match(words, err.strip())
    assert not Path("run").exists()


def test_load_pretrained_without_weights_is_none():
    assert load_pretrained(_tiny(), ModelConfig()) is None
