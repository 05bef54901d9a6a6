"""Distillation from a foreign teacher: resolution stages found by tracing, attention points
paired by size or by name, and a torchvision teacher from a weights file through nettle train."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from nettle.cli import main
from nettle.compress.objectives import _PairedDistill, attention_pairs, resolution_stages
from nettle.config import ConfigError, load_config_dict
from nettle.measure.timing import PhaseTimer
from nettle.models import create_model
from nettle.models.build import build_model, check_teacher, load_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=10).state_dict(), path)
    return path


def test_stage_ends_of_a_plain_net():
    # 8x8 conv, 4x4 after the pool (the ReLU ends that stage), 1x1 after global pooling: left out
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert resolution_stages(net, (1, 8, 8)) == [("1", (8, 8)), ("3", (4, 4))]


@pytest.mark.parametrize(
    ("name", "shape", "stages"),
    [
        (
            "torchvision:resnet18",
            (1, 32, 32),
            [("net.relu", 16), ("net.layer1", 8), ("net.layer2", 4), ("net.layer3", 2)],
        ),
        # pre-activation groups: the group ends a stage, not the next group's BN-ReLU
        ("wrn-10-1", (3, 32, 32), [("block1", 32), ("block2", 16), ("relu", 8)]),
        # cells in a ModuleList read the previous cells' outputs: the last cell of each size
        ("darts", (3, 32, 32), [("cells.5", 32), ("cells.12", 16), ("cells.19", 8)]),
        # squeeze-and-excitation's 1x1 maps do not split a stage
        (
            "torchvision:mobilenet_v3_small",
            (3, 64, 64),
            [
                ("features.0", 32),
                ("features.1", 16),
                ("features.3", 8),
                ("features.8", 4),
                ("features", 2),
            ],
        ),
    ],
)
def test_stage_ends_of_zoo_and_foreign_networks(name, shape, stages):
    kwargs = {"layers": 20} if name == "darts" else {}
    mean = {"mean": [0.5], "std": [0.2]} if shape[0] == 1 else {}
    model = create_model(name, 10, in_channels=shape[0], **mean, **kwargs)
    assert resolution_stages(model, shape) == [(n, (s, s)) for n, s in stages]


def _cfg(tmp_path, teacher_weights, **distill):
    tree = {
        "model": {"name": "simple-cnn", "conv": "Generic_0.5", "kwargs": {"width": 8}},
        "data": {"image_size": 16},
        "distill": {"teacher": "torchvision:resnet18", "teacher_weights": str(teacher_weights)}
        | distill,
    }
    return load_config_dict(tree)


def _nets(cfg):
    return build_model(cfg), load_teacher(cfg.distill.teacher, cfg.distill.teacher_weights, cfg)


def test_points_paired_by_stage_size_or_by_name(tmp_path, teacher_weights):
    cfg = _cfg(tmp_path, teacher_weights)
    student, teacher = _nets(cfg)
    assert teacher.weights_report["loaded"] == 122 and list(teacher._modules)[1] == "repeat"
    # student stages: stem 16x16, stage2 8x8; teacher: relu 8x8, layer1 4x4, ...
    pairs, source = attention_pairs(cfg, student, teacher, (1, 16, 16))
    assert (pairs, source) == ([("net.stage2", "net.relu", (8, 8))], "stages")
    named = _cfg(tmp_path, teacher_weights, at_layers=[["net.stage1", "net.relu"], "normalize"])
    pairs, source = attention_pairs(named, student, teacher, (1, 16, 16))
    assert source == "config" and pairs[0] == ("net.stage1", "net.relu", (8, 8))


@pytest.mark.parametrize(
    ("at_layers", "words"),
    [
        ([["net.stem", "net.layer1"]], "student net.stem 16x16, teacher net.layer1 4x4"),
        ([["net.stage9", "net.layer1"]], "the student has no module 'net.stage9'"),
        ([["net.stem", "net.fc"]], "the teacher's 'net.fc' gives no 4-D map"),
    ],
)
def test_bad_points_are_one_line_naming_the_layers(tmp_path, teacher_weights, at_layers, words):
    cfg = _cfg(tmp_path, teacher_weights, at_layers=at_layers)
    student, teacher = _nets(cfg)
    with pytest.raises(ValueError) as info:
        attention_pairs(cfg, student, teacher, (1, 16, 16))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_no_stage_of_equal_size_is_refused(tmp_path, teacher_weights):
    cfg = _cfg(tmp_path, teacher_weights)
    student, teacher = _nets(cfg)
    with pytest.raises(
        ValueError, match=r"size in student \(net.stem 2x2\) and teacher \(\(none\)\)"
    ):
        attention_pairs(cfg, student, teacher, (1, 2, 2))


def test_paired_loss_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    student = create_model("simple-cnn", in_channels=1, width=4).eval()
    teacher = nn.Sequential()
    teacher.add_module("inner", copy.deepcopy(student))
    names = ["stage1", "stage2"]
    objective = _PairedDistill(
        teacher, names, [f"inner.{n}" for n in names], beta=1e3, alpha=1.0, temperature=4.0
    )
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    out = objective(student, x, y, PhaseTimer())
    assert out.loss.item() == pytest.approx(0.0, abs=1e-5)
    assert out.parts["at"].item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_by_name_needs_its_weights(tmp_path, teacher_weights):
    cfg = _cfg(tmp_path, teacher_weights)
    bare = cfg.model_copy(
        update={"distill": cfg.distill.model_copy(update={"teacher_weights": None})}
    )
    with pytest.raises(FileNotFoundError, match="a model name needs distill.teacher_weights"):
        check_teacher(bare)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02junk")
    bad = cfg.model_copy(
        update={"distill": cfg.distill.model_copy(update={"teacher_weights": str(broken)})}
    )
    with pytest.raises(ConfigError, match=r"^distill.teacher_weights: .*broken.pt: unreadable"):
        check_teacher(bad)


def _write(tmp_path, weights, **distill):
    tree = {
        "name": "student",
        "model": {"name": "simple-cnn", "conv": "Generic_0.5", "kwargs": {"width": 8}},
        "data": {"image_size": 16, "subset": 64, "batch_size": 32},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
        "distill": {"teacher": "torchvision:resnet18", "teacher_weights": str(weights)} | distill,
        "evaluate": {"count": None},
    }
    path = tmp_path / "student.yaml"
    path.write_text(json.dumps(tree))
    return path


def test_distill_from_a_torchvision_teacher_through_nettle_train(
    tmp_path, teacher_weights, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(_write(tmp_path, teacher_weights)), "-o", "run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    info = summary["distill"]
    assert info["teacher"] == "torchvision:resnet18" and info["at_source"] == "stages"
    assert (info["at_layers"], info["teacher_at_layers"]) == (["net.stage2"], ["net.relu"])
    assert info["at_sizes"] == [[8, 8]] and info["teacher_weights"]["loaded"] == 122
    assert "teacher" in summary["phases"] and math.isfinite(summary["final"]["train_loss"])


def test_a_missing_teacher_file_refuses_the_run_before_it_starts(
    tmp_path, teacher_weights, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    config = _write(tmp_path, tmp_path / "none.pt")
    assert main(["train", str(config), "-o", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nettle train: error: distill.teacher_weights: ") and "none.pt" in err
    assert len(err.splitlines()) == 1 and not Path("run").exists()
