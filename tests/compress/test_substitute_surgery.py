import pytest
import torch
from torch import nn

from nettle.compress.substitute import apply_substitute, load_matching


def _net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_apply_substitute_replaces_all_but_stem_and_grouped():
    model = _net()
    replaced = apply_substitute(model, "Conv")
    assert replaced == ["3"]
    assert isinstance(model[3], nn.Conv2d) and model[3].bias is None
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 4)


def test_apply_substitute_with_a_selector():
    model = _net()
    replaced = apply_substitute(model, "Conv", include=lambda name, layer: True)
    assert replaced == ["0", "3"]


def test_student_loads_every_unsubstituted_teacher_weight():
    torch.manual_seed(0)
    teacher = _net()
    student = _net()
    student[3] = nn.Conv2d(8, 8, 1, bias=False)  # a "substituted" layer of another shape
    report = load_matching(student, teacher.state_dict())
    assert report.shape_mismatch == ["3.weight"]
    assert "0.weight" in report.loaded and "1.running_mean" in report.loaded
    for name in report.loaded:
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name])
    assert report.missing_in_teacher == [] and report.unused_from_teacher == []


def test_unused_and_missing_are_reported():
    student = nn.Sequential(nn.Linear(2, 2))
    report = load_matching(student, {"0.weight": torch.zeros(2, 2), "9.weight": torch.zeros(1)})
    assert report.loaded == ["0.weight"]
    assert report.missing_in_teacher == ["0.bias"]
    assert report.unused_from_teacher == ["9.weight"]


def test_non_square_conv_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, (1, 3)))
    with pytest.raises(ValueError, match="non-square kernel"):
        apply_substitute(model, "Conv")
