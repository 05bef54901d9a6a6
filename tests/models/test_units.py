"""Units per layer (`model.units`): selection, surgery, parameter counts, refusals."""

import pytest
import torch
from torch import nn

from nettle.config import ConfigError, UnitRule, load_config_dict
from nettle.models.build import build_model
from nettle.models.units import activation_slots, apply_units, layer_slots
from nettle.nn.logic import (
    EllipticalLinear,
    Maxout,
    QuadraticConv2d,
    ReLog,
    ReLog1p,
    SphericalConv2d,
)


def _build(units, name="simple-cnn", size=None, train=None, **model):
    tree = {"model": {"name": name, "units": units, **model}, "train": train or {}}
    if name == "simple-cnn":
        tree["model"]["kwargs"] = {"width": 8}
    if size:
        tree["data"] = {"image_size": size}
    return build_model(load_config_dict(tree))


def _names(model, cls):
    return [n for n, m in model.named_modules() if type(m) is cls]


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_all_last_and_container_select_exactly_those_activations():
    every = _build([{"unit": "relog"}])
    assert _names(every, ReLog) == ["net.stem.2", "net.stage1.2", "net.stage2.2"]
    assert _names(every, nn.ReLU) == []
    last = _build([{"unit": "relog", "last": 2}])
    assert _names(last, ReLog) == ["net.stage1.2", "net.stage2.2"]
    assert _names(last, nn.ReLU) == ["net.stem.2"]
    inside = _build([{"unit": "relog1p", "beta": 3.0, "layers": ["net.stage1"]}])
    assert _names(inside, ReLog1p) == ["net.stage1.2"]
    assert inside.get_submodule("net.stage1.2").beta == 3.0


def test_a_later_rule_overrides_an_earlier_one():
    m = _build([{"unit": "relog", "b": 100, "c": 1}, {"unit": "relu", "layers": ["net.stem.2"]}])
    assert _names(m, nn.ReLU) == ["net.stem.2"]
    relog = m.get_submodule("net.stage2.2")
    assert (relog.base, relog.eps, relog.offset) == (100, 0.01, 1)


def test_activation_shorthand_is_one_rule_for_every_relu():
    m = build_model(load_config_dict({"model": {"kwargs": {"width": 8}, "activation": "relog"}}))
    assert len(_names(m, ReLog)) == 3 and _names(m, nn.ReLU) == []


@pytest.mark.parametrize(
    ("name", "units", "replaced", "kept"),
    [
        # ResNet-18: stem ReLU + 8 basic blocks x 2; layer4 holds 2 blocks -> 4
        ("resnet18", [{"unit": "relog", "layers": ["net.layer4"]}], 4, 13),
        # VGG-11 with the CIFAR head: one ReLU per conv, 8 convs
        ("vgg11", [{"unit": "relog"}], 8, 0),
        # WRN-16-2: 3 groups x 2 blocks x 2 ReLUs + the final ReLU = 13
        ("wrn-16-2", [{"unit": "relog", "last": 3}], 3, 10),
    ],
)
def test_selection_on_the_zoo_counts(name, units, replaced, kept):
    m = _build(units, name, size=32)
    assert len(_names(m, ReLog)) == replaced
    assert len(_names(m, nn.ReLU)) == kept


def test_last_three_of_wrn_in_module_order():
    m = _build([{"unit": "relog", "last": 3}], "wrn-16-2", size=32)
    assert _names(m, ReLog) == ["net.block3.1.relu1", "net.block3.1.relu2", "net.relu"]


def test_maxout_widens_the_feeding_conv_and_its_batchnorm_by_hand():
    # simple-cnn width 8, one channel: stem conv 1*8*9 + BN 16, stage1 8*16*9 + BN 32,
    # stage2 16*32*9 + BN 64, fc 32*10 + 10
    plain = _build([])
    assert _params(plain) == 72 + 16 + 1152 + 32 + 4608 + 64 + 330
    folded = _build([{"unit": "maxout", "k": 2, "last": 1}])
    # stage2's conv makes 64 channels (16*64*9 weights), its BN 64 (128 parameters)
    assert _params(folded) == _params(plain) + 4608 + 64
    assert folded.get_submodule("net.stage2.0").out_channels == 64
    assert folded.get_submodule("net.stage2.1").num_features == 64
    assert isinstance(folded.get_submodule("net.stage2.2"), Maxout)
    assert folded.units_report["widened"] == {"net.stage2.0": 2, "net.stage2.1": 2}
    assert folded(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    minmax = _build([{"unit": "minmaxout", "k": 2, "k_min": 3, "layers": ["net.stem.2"]}])
    # the stem conv makes 8 * 6 = 48 channels: 48*9 weights and 96 BN parameters
    assert _params(minmax) == _params(plain) + 40 * 9 + 80


def test_quadratic_units_parameters_by_hand_and_same_outputs_at_start():
    plain = _build([])
    quad = _build([{"unit": "quadratic", "layers": ["net.stage1.0"]}])
    assert _params(quad) == _params(plain) + 8 * 16 * 9  # a signed Q beside every weight
    assert isinstance(quad.get_submodule("net.stage1.0"), QuadraticConv2d)
    sphere = _build([{"unit": "spherical", "layers": ["net.stage1.0"], "step": 0.01}])
    assert _params(sphere) == _params(plain) + 16  # one |q| per output channel
    assert isinstance(sphere.get_submodule("net.stage1.0"), SphericalConv2d)
    ell = _build([{"unit": "elliptical", "last": 1}])
    assert ell.units_report["units"] == {"net.fc": "elliptical"}
    assert isinstance(ell.get_submodule("net.fc"), EllipticalLinear)
    assert _params(ell) == _params(plain) + 32 * 10
    # weights are copied and the quadratic term starts at 0 (Q = 0; curvature a = 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(2, 1, 4, 4)
    before = model.eval()(x)
    apply_units(model, [UnitRule(unit="quadratic"), UnitRule(unit="elliptical", last=1)])
    assert type(model[0]) is QuadraticConv2d and type(model[3]) is EllipticalLinear
    torch.testing.assert_close(model(x), before)


def test_slots_lists():
    m = _build([])
    assert activation_slots(m) == ["net.stem.2", "net.stage1.2", "net.stage2.2"]
    assert layer_slots(m) == ["net.stem.0", "net.stage1.0", "net.stage2.0", "net.fc"]


def test_sigmoid_output_keeps_the_state_dict():
    torch.manual_seed(0)
    logits = _build([])
    probs = _build([], output="sigmoid", train={"loss": "bce"})
    assert list(probs.state_dict()) == list(logits.state_dict())
    probs.load_state_dict(logits.state_dict())
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(probs.eval()(x), torch.sigmoid(logits.eval()(x)))


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ([{"unit": "relog", "layers": ["net.stage9"]}], "no layer named 'net.stage9'"),
        ([{"unit": "relog", "layers": ["net.fc"]}], "'net.fc' holds no activation"),
        ([{"unit": "quadratic", "layers": ["net.stem.2"]}], "holds no Conv2d/Linear"),
        ([{"unit": "relog", "last": 4}], "last: 4, but the model has 3"),
    ],
)
def test_bad_selections_are_one_line(units, message):
    with pytest.raises(ConfigError, match=message) as err:
        _build(units)
    assert "\n" not in str(err.value) and "model.units[0]" in str(err.value)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ConfigError, match="known: net.stage1.2"):
        _build([{"unit": "relog", "layers": ["net.stage1.22"]}])


def test_maxout_after_a_residual_sum_is_refused():
    with pytest.raises(ConfigError, match="net.layer1.0.relu2.*residual sum"):
        _build([{"unit": "maxout", "layers": ["net.layer1.0.relu2"]}], "resnet18", size=32)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"units": [{"unit": "relu", "b": 2}]}, "model.units.0: b is not a parameter of relu"),
        ({"units": [{"unit": "maxout", "k_min": 2}]}, "k_min is not a parameter of maxout"),
        ({"units": [{"unit": "relog", "layers": ["a"], "last": 1}]}, "not both"),
        ({"units": [{"unit": "tanh"}]}, "model.units.0.unit"),
        ({"units": [{"unit": "relog"}], "activation": "relog"}, "shorthand of units"),
    ],
)
def test_bad_rules_are_refused_by_the_config(model, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config_dict({"model": model})
    assert "\n" not in str(err.value)
