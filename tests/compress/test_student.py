import copy

import pytest
import torch

from nettle.compress.distill import DistillObjective
from nettle.config import ConfigError, load_config_dict
from nettle.experiment.run import run_experiment
from nettle.measure.timing import PhaseTimer
from nettle.models import create_model


def test_distill_loss_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    teacher = create_model("simple-cnn", in_channels=1, width=4).eval()
    student = copy.deepcopy(teacher)
    obj = DistillObjective(teacher, teacher.at_layers, beta=1e3, alpha=1.0, temperature=4.0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    out = obj(student.eval(), x, y, PhaseTimer())
    assert out.loss.item() == pytest.approx(0.0, abs=1e-5)
    assert set(out.parts) == {"kd", "at"}
    # the teacher keeps no graph and gets no gradient
    assert all(not t.requires_grad for t in obj._teacher_tap.outputs)
    assert all(not p.requires_grad for p in teacher.parameters())


def _cfg(name, **extra):
    tree = {
        "name": name,
        "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
        **extra,
    }
    return load_config_dict(tree)


def test_student_run_loads_teacher_and_scales_decay(tmp_path):
    run_experiment(_cfg("teacher"), tmp_path / "teacher")
    student = _cfg("student", distill={"teacher": str(tmp_path / "teacher")})
    student = student.model_copy(update={"model": student.model.model_copy(update={"conv": "Sep"})})
    summary = run_experiment(student, tmp_path / "student")
    assert summary["status"] == "done"
    assert summary["distill"]["at_layers"] == ["net.stage1", "net.stage2"]
    # every tensor but the two substituted convs' comes from the teacher: the 2 normalisation
    # buffers, the stem conv, 3 BNs x (weight, bias, running mean and var, batches), the fc's 2
    assert summary["distill"]["not_loaded"] == [
        f"net.stage{i}.0.{part}.weight" for i in (1, 2) for part in ("depthwise", "pointwise")
    ]
    assert summary["distill"]["loaded"] == 2 + 1 + 3 * 5 + 2
    # teacher, width 8: convs 1-8-16-32 (3x3, no bias), 3 BNs, Linear 32 -> 10; the student's
    # stage convs (8 -> 16, 16 -> 32) are depthwise 3x3 + pointwise 1x1
    teacher = 9 * (1 * 8 + 8 * 16 + 16 * 32) + 2 * (8 + 16 + 32) + 32 * 10 + 10
    params = 9 * 8 + (9 * 8 + 8 * 16) + (9 * 16 + 16 * 32) + 2 * (8 + 16 + 32) + 32 * 10 + 10
    assert (teacher, params) == (6274, 1370) and summary["params"] == params
    decay = summary["decay"]
    assert decay["ratio"] == pytest.approx(params / teacher) and decay["scaled"]
    assert "teacher" in summary["phases"]


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="distill.teacher: .*nope does not exist"):
        run_experiment(_cfg("s", distill={"teacher": str(tmp_path / "nope")}), tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="distill.beta"):
        _cfg("s", distill={"teacher": "x", "beta": -1})
