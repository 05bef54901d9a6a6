import math

import pytest
import torch
from torch import nn

from nettle.measure import count
from nettle.models import create_model
from nettle.nn.substitutes import create_conv, list_substitutes
from nettle.nn.substitutes.acdc import ACDC
from nettle.nn.substitutes.lowrank import GenericLowRank
from nettle.nn.substitutes.shuffle import shuffle_groups
from nettle.nn.substitutes.tensor import Decomposed1x1, tensor_dims

SPECS = [
    "Conv",
    "Sep",
    "Generic_0.25",
    "LR_0.25",
    "Shuffle_2",
    "Hashed_0.3",
    "HashedDecimate",
    "SepHashed_0.3",
    "SepHashedDecimate",
    "ACDC_3",
    "TensorTrain_0.5",
    "Tucker_0.5",
    "CP_0.5",
]
SHAPES = [  # (in, out, k, stride, padding, dilation)
    (8, 8, 3, 1, 1, 1),
    (8, 16, 3, 2, 1, 1),
    (16, 8, 1, 1, 0, 1),
    (8, 16, 1, 2, 0, 1),
    (8, 8, 3, 1, 2, 2),
]


def test_every_substitute_is_registered():
    assert sorted(s.split("_")[0].lower() for s in SPECS) == list_substitutes()


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", SHAPES)
def test_output_shape_equals_the_dense_conv(spec, shape):
    c_in, c_out, k, s, p, d = shape
    if spec.startswith("LR") and c_out % c_in:
        with pytest.raises(ValueError, match="multiple of in_channels"):
            create_conv(spec, c_in, c_out, k, stride=s, padding=p, dilation=d)
        return
    dense = nn.Conv2d(c_in, c_out, k, s, p, d)
    x = torch.rand(2, c_in, 9, 9)
    if spec == "SepHashedDecimate" and k > 1 and c_out * c_in * k * k // 10 <= c_in * k * k:
        with pytest.raises(ValueError, match="does not cover the depthwise conv"):
            create_conv(spec, c_in, c_out, k, stride=s, padding=p, dilation=d)
        return
    sub = create_conv(spec, c_in, c_out, k, stride=s, padding=p, dilation=d)
    assert sub(x).shape == dense(x).shape


@pytest.mark.parametrize("spec", SPECS)
def test_gradients(spec):
    torch.manual_seed(0)
    layer = create_conv(spec, 4, 16, 3, stride=2, padding=1).double()
    x = torch.rand(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)
    layer(x).square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def _wrn_substituted_params(conv: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model("wrn-28-10", conv=conv).parameters())


@pytest.mark.parametrize(
    ("conv", "params"),
    [  # Gray et al. 2019, research log and worked counts (WRN-28-10, CIFAR-10)
        ("Sep", 4_380_138),
        ("Generic_0.03", 601_162),
        ("Shuffle_4", 823_674),
        ("Shuffle_8", 563_594),
        ("SepHashed_0.05", 568_426),
        ("ACDC", 555_498),
        ("HashedDecimate", 3_911_898),
        ("SepHashedDecimate", 3_911_898),
        ("Hashed_0.01", 654_272),
        ("TensorTrain_0.26", 664_226),
        ("Tucker_0.25", 681_248),
    ],
)
def test_wrn_28_10_parameters_match_the_reference(conv, params):
    assert _wrn_substituted_params(conv) == params


@pytest.mark.parametrize(
    ("conv", "macs"),
    [
        ("Sep", "6.29697E+08"),
        ("Shuffle_4", "1.17201E+08"),
        ("Shuffle_8", "7.69784E+07"),
        ("ACDC", "1.33879E+09"),
        ("TensorTrain_0.26", "6.29697E+08"),
        ("HashedDecimate", "5.24564E+09"),
    ],
)
def test_wrn_28_10_mult_adds_match_the_reference(conv, macs):
    r = count(create_model("wrn-28-10", conv=conv), (3, 32, 32), "deficient-efficient")
    assert f"{r.macs:.5E}" == macs
    assert r.unsupported == []


def test_layer_formulas_by_hand():
    # Generic_0.03 on 640->640 at 8x8: R = 19; Ci*9 + R*(Ci+Co) params
    g = create_conv("Generic_0.03", 640, 640, 3, padding=1)
    assert g.rank == 19 and sum(p.numel() for p in g.parameters()) == 640 * 9 + 19 * 1280
    # TT 640x640, s=0.26: cores (1,80,21), (21,80,17), (17,64,1) = 31,328 (+ depthwise)
    assert tensor_dims(640, 640) == (80, 80, 64)
    tt = create_conv("TensorTrain_0.26", 640, 640, 1)
    assert [tuple(f.shape) for f in tt.factors] == [(1, 80, 21), (21, 80, 17), (17, 64, 1)]
    tucker = create_conv("Tucker_0.25", 640, 640, 1)
    assert sum(f.numel() for f in tucker.factors) == 31_680
    assert shuffle_groups(16, 160, 3) == 2  # g=3 impossible on WRN-28-10: falls to 2
    # ACDC cost: 11 factors x (4N + 5N log2 N) per position at N = 160
    acdc = create_conv("ACDC", 160, 160, 1)
    r = count(acdc, (160, 4, 4))
    assert r.macs == round(16 * 11 * (4 * 160 + 5 * 160 * math.log2(160)))


def test_acdc_strided_reference_quirk():
    layer = create_conv("ACDC", 16, 32, 3, stride=2, padding=1)
    default = count(layer, (16, 8, 8))
    ref = count(layer, (16, 8, 8), "deficient-efficient")
    per = 11 * (4 * 32 + 5 * 32 * 5)
    assert default.macs == 16 * 16 * 9 + 16 * per  # true output size 4x4
    assert ref.macs == 16 * 16 * 9 + 64 * per  # the reference counts the input size 8x8


def test_dense_equivalence_at_full_rank():
    torch.manual_seed(0)
    dense = nn.Conv2d(6, 10, 1, bias=True)
    x = torch.rand(2, 6, 5, 5)
    gen = GenericLowRank.from_dense(dense, 1.0)
    torch.testing.assert_close(gen(x), dense(x), atol=1e-5, rtol=1e-5)
    for kind in ("tt", "tucker"):
        dec = Decomposed1x1.from_dense(dense, kind, 1.0)
        torch.testing.assert_close(dec(x), dense(x), atol=1e-5, rtol=1e-5)
    # Sep with an identity depthwise equals its pointwise 1x1
    sep = create_conv("Sep", 6, 10, 3, padding=1)
    with torch.no_grad():
        sep.depthwise.weight.zero_()
        sep.depthwise.weight[:, :, 1, 1] = 1.0
    torch.testing.assert_close(sep(x), sep.pointwise(x))
    # hashed with a full budget and the identity table is the dense conv
    h = create_conv("Hashed_1.0", 6, 10, 1)
    with torch.no_grad():
        h.index.copy_(torch.arange(60))
        h.hashed_weight.copy_(dense.weight.flatten())
        h.bias.copy_(dense.bias)
    torch.testing.assert_close(h(x), dense(x))


def test_acdc_identity_at_unit_diagonals_and_orthonormal():
    layer = ACDC(8, 8, 1, factors=1)
    with torch.no_grad():
        layer.A.fill_(1.0)
        layer.D.fill_(1.0)
    x = torch.rand(3, 8, 2, 2)
    y = layer(x)  # IDCT(riffle(DCT(x))): orthonormal, so the norm per pixel is kept
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1))


@pytest.mark.parametrize(
    "name", ["Generic", "TensorTrain", "Tucker", "Hashed", "SepHashed", "ACDC"]
)
def test_parameters_fall_with_the_setting(name):
    settings = [2, 4, 8] if name == "ACDC" else [0.1, 0.3, 0.6]
    counts = [
        sum(p.numel() for p in create_conv(f"{name}_{s}", 32, 64, 3).parameters()) for s in settings
    ]
    assert counts[0] < counts[1] < counts[2]


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="'Generic' needs a positive rank scale"):
        create_conv("Generic", 4, 4, 3)
    with pytest.raises(ValueError, match="'Shuffle' needs a group count"):
        create_conv("Shuffle_0", 4, 4, 3)
    with pytest.raises(ValueError, match="'Sep' takes no setting"):
        create_conv("Sep_2", 4, 4, 3)
    with pytest.raises(ValueError, match="multiple of in_channels"):
        create_conv("LR_0.5", 6, 8, 3)


def test_acdc_basis_path_equals_per_position_path():
    torch.manual_seed(0)
    layer = ACDC(8, 16, 3, stride=2, padding=1, factors=3).double()
    x = torch.rand(2, 8, 5, 5, dtype=torch.float64)
    dense_path = layer(x)  # 18 positions > 16 channels: the basis path
    h = layer.depthwise(x).repeat(1, 2, 1, 1)
    per_position = layer.structured(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense_path, per_position)
