import doctest

import pytest
import torch
from torch import nn
from torch.func import functional_call

import nettle.nn.substitutes.lowrank as lowrank_module
import nettle.nn.substitutes.shuffle as shuffle_module
from nettle.measure import count
from nettle.nn.substitutes import (
    CP,
    GenericLowRank,
    Separable,
    TensorTrain,
    TiedLowRank,
    Tucker,
    create_conv,
    list_substitutes,
)
from nettle.nn.substitutes.decompositions import tensor_dims

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
    "OriginalACDC_3",
    "PermutedACDC_3",
    "TensorTrain_0.5",
    "Tucker_0.5",
    "CP_0.5",
    "TensorTrain4_0.5",
    "Tucker4_0.5",
    "CP4_0.5",
]
SHAPES = [  # (in, out, k, stride, padding, dilation)
    (8, 8, 3, 1, 1, 1),
    (8, 16, 3, 2, 1, 1),
    (16, 8, 1, 1, 0, 1),
    (8, 16, 1, 2, 1, 1),
    (8, 8, 3, 1, 2, 2),
    (6, 12, 5, 2, 0, 1),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _unsupported(spec: str, c_in: int, c_out: int, k: int) -> str | None:
    if spec.startswith("LR") and c_out % c_in:
        return "multiple of in_channels"
    if spec == "SepHashedDecimate" and k > 1 and c_out * c_in * k * k // 10 <= c_in * k * k:
        return "does not cover the depthwise conv"
    return None


def test_every_substitute_is_registered_case_insensitively():
    assert sorted(s.split("_")[0].lower() for s in SPECS) == list_substitutes()
    assert type(create_conv("tensortrain_0.5", 8, 8, 3)) is type(
        create_conv("TENSORTRAIN_0.5", 8, 8, 3)
    )


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", SHAPES)
def test_output_shape_equals_the_dense_conv_and_to_dense_is_exact(spec, shape):
    c_in, c_out, k, s, p, d = shape
    args = {"stride": s, "padding": p, "dilation": d}
    reason = _unsupported(spec, c_in, c_out, k)
    if reason:
        with pytest.raises(ValueError, match=reason):
            create_conv(spec, c_in, c_out, k, **args)
        return
    torch.manual_seed(0)
    x = torch.rand(2, c_in, 9, 9, dtype=torch.float64)
    sub = create_conv(spec, c_in, c_out, k, **args).double()
    y = sub(x)
    assert y.shape == nn.Conv2d(c_in, c_out, k, **args)(x.float()).shape
    if spec != "Conv":  # every substitute is linear: a dense conv reproduces it
        torch.testing.assert_close(sub.to_dense()(x), y)


@pytest.mark.parametrize("spec", SPECS)
def test_gradcheck_inputs_and_parameters(spec):
    torch.manual_seed(0)
    layer = create_conv(spec, 4, 16, 3, stride=2, padding=1, bias=True).double()
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    x = torch.rand(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)

    def run(x, *ps):
        return functional_call(layer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-6)


def test_bad_or_missing_settings_name_the_substitute():
    cases = {
        "Generic": "'Generic' needs a positive rank scale",
        "LR_0": "'LR' needs a positive rank scale",
        "Shuffle_0": "'Shuffle' needs an integer group count",
        "Shuffle_2.5": "'Shuffle' needs an integer group count",
        "Hashed_1.5": "'Hashed' needs a budget fraction",
        "SepHashed": "'SepHashed' needs a budget fraction",
        "HashedDecimate_2": "'HashedDecimate' takes no setting",
        "SepHashedDecimate_2": "'SepHashedDecimate' takes no setting",
        "Sep_2": "'Sep' takes no setting",
        "ACDC_1": "'ACDC' needs a layer count n >= 2",
        "TensorTrain": "'TensorTrain' needs a positive rank scale",
        "Tucker_-1": "'Tucker' needs a positive rank scale",
        "CP_0": "'CP' needs a positive rank scale",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message):
            create_conv(spec, 8, 8, 3)
    with pytest.raises(ValueError, match="'ACDC': 12 input channels do not sum into 8"):
        create_conv("ACDC", 12, 8, 1)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("Generic", [0.05, 0.1, 0.3, 0.6]),
        ("LR", [0.05, 0.1, 0.3, 0.6]),
        ("Hashed", [0.01, 0.1, 0.3, 1.0]),
        ("SepHashed", [0.01, 0.1, 0.3, 1.0]),
        ("ACDC", [2, 4, 8, 16]),
        ("TensorTrain", [0.1, 0.3, 0.6, 1.0]),
        ("Tucker", [0.1, 0.3, 0.6, 1.0]),
        ("CP", [0.1, 0.3, 0.6, 1.0]),
        ("Shuffle", [8, 4, 2, 1]),  # more groups, fewer parameters
    ],
)
def test_parameters_grow_with_the_setting(name, settings):
    counts = [_n_params(create_conv(f"{name}_{s}", 64, 128, 3)) for s in settings]
    assert counts == sorted(set(counts)), counts
    assert counts[-1] <= _n_params(nn.Conv2d(64, 128, 3, bias=False)) + 128


def test_generic_and_lr_from_dense_at_full_rank_equal_the_dense_conv():
    torch.manual_seed(0)
    x = torch.rand(2, 6, 7, 7, dtype=torch.float64)
    dense = nn.Conv2d(6, 10, 1, stride=2, padding=1, bias=True).double()
    torch.testing.assert_close(GenericLowRank.from_dense(dense, 1.0)(x), dense(x))
    # a separable 3x3 kernel is represented exactly too (depthwise + full-rank 1x1)
    sep = nn.Conv2d(6, 10, 3, padding=1, bias=False).double()
    with torch.no_grad():
        sep.weight.copy_(
            torch.randn(10, 6, 1, 1, dtype=torch.float64)
            * torch.randn(1, 6, 3, 3, dtype=torch.float64)
        )
    torch.testing.assert_close(GenericLowRank.from_dense(sep, 1.0)(x), sep(x))
    torch.testing.assert_close(Separable.from_dense(sep)(x), sep(x))
    # LR represents a symmetric PSD map exactly: dense weight B^T B
    b = torch.randn(6, 6, dtype=torch.float64)
    psd = nn.Conv2d(6, 6, 1, bias=True).double()
    with torch.no_grad():
        psd.weight.copy_((b.t() @ b)[:, :, None, None])
    torch.testing.assert_close(TiedLowRank.from_dense(psd, 1.0)(x), psd(x))


def test_low_rank_from_dense_is_the_truncated_svd():
    torch.manual_seed(0)
    dense = nn.Conv2d(12, 12, 1, bias=False).double()
    s = torch.linalg.svdvals(dense.weight[:, :, 0, 0])
    low = GenericLowRank.from_dense(dense, 0.25)  # rank 3
    err = torch.linalg.matrix_norm(low.matrix() - dense.weight[:, :, 0, 0])
    torch.testing.assert_close(err, s[3:].square().sum().sqrt())


@pytest.mark.parametrize(("cls", "setting"), [(TensorTrain, 1.0), (Tucker, 1.0), (CP, 4.0)])
def test_tensor_from_dense_at_full_rank_equals_the_dense_conv(cls, setting):
    torch.manual_seed(0)
    assert tensor_dims(10, 6) == (4, 5, 3)  # full CP rank 4 * 3 = 12 = round(4.0 * 3)
    x = torch.rand(2, 6, 7, 7, dtype=torch.float64)
    for k, pad in ((1, 0), (3, 1)):
        dense = nn.Conv2d(6, 10, k, padding=pad, bias=True).double()
        if k == 3:  # a separable kernel, so that depthwise + 1x1 can be exact
            with torch.no_grad():
                dense.weight.copy_(
                    torch.randn(10, 6, 1, 1, dtype=torch.float64)
                    * torch.randn(1, 6, 3, 3, dtype=torch.float64)
                )
        torch.testing.assert_close(cls.from_dense(dense, setting)(x), dense(x))


# full rank of (3, 4, 5, 2): TT ranks (3, 10, 2), so s = 2.5 on min(4, 5); Tucker s = 1;
# CP rank 3 * 4 * 2 = 24 = round(12 * 2)
@pytest.mark.parametrize(("cls", "setting"), [(TensorTrain, 2.5), (Tucker, 1.0), (CP, 12.0)])
def test_order_4_from_dense_at_full_rank_equals_the_dense_conv(cls, setting):
    torch.manual_seed(0)
    assert tensor_dims(12, 10, 4) == (3, 4, 5, 2)  # 120 ** (1/4) = 3.3 -> m = 3
    x = torch.rand(2, 10, 5, 5, dtype=torch.float64)
    dense = nn.Conv2d(10, 12, 1, bias=True).double()
    layer = cls.from_dense(dense, setting, order=4)
    assert len(layer.dims) == 4
    torch.testing.assert_close(layer(x), dense(x))


def test_order_4_views_follow_the_reference_rule():
    assert tensor_dims(640, 640, 4) == (25, 32, 32, 16)  # m = round(640^(1/2)) = 25
    assert tensor_dims(16, 16, 4) == (4, 4, 4, 4)  # a perfect fourth power
    layer = create_conv("TensorTrain4_0.8", 640, 640, 3, padding=1)
    assert [tuple(f.shape) for f in layer.factors] == [
        (1, 25, 20),
        (20, 32, 26),
        (26, 32, 13),
        (13, 16, 1),
    ]


def test_cp_from_dense_below_full_rank_fits_a_low_rank_tensor():
    torch.manual_seed(0)
    dims = tensor_dims(16, 16)
    assert dims == (8, 8, 4)
    factors = [torch.randn(d, 2, dtype=torch.float64) for d in dims]
    target = torch.einsum("ir,jr,kr->ijk", *factors).reshape(16, 16)
    dense = nn.Conv2d(16, 16, 1, bias=False).double()
    with torch.no_grad():
        dense.weight.copy_(target[:, :, None, None])
    cp = CP.from_dense(dense, 0.5)  # rank round(0.5 * 4) = 2
    torch.testing.assert_close(cp.matrix(), target, atol=1e-6, rtol=1e-6)


def test_sep_with_identity_depthwise_is_its_pointwise_conv():
    sep = create_conv("Sep", 6, 10, 3, padding=1)
    with torch.no_grad():
        sep.depthwise.weight.zero_()
        sep.depthwise.weight[:, :, 1, 1] = 1.0
    x = torch.rand(2, 6, 5, 5)
    torch.testing.assert_close(sep(x), sep.pointwise(x))


def test_hashed_full_budget_with_identity_hash_is_the_dense_conv():
    torch.manual_seed(0)
    dense = nn.Conv2d(6, 10, 3, padding=1, bias=True)
    h = create_conv("Hashed_1.0", 6, 10, 3, padding=1)
    assert _n_params(h) == _n_params(dense) == 6 * 10 * 9 + 10
    with torch.no_grad():
        h.index.copy_(torch.arange(540))
        h.hashed_weight.copy_(dense.weight.flatten())
        h.bias.copy_(dense.bias)
    x = torch.rand(2, 6, 5, 5)
    torch.testing.assert_close(h(x), dense(x))


def test_hash_table_is_a_seeded_buffer():
    torch.manual_seed(1)
    a = create_conv("Hashed_0.1", 8, 8, 3)
    torch.manual_seed(1)
    b = create_conv("Hashed_0.1", 8, 8, 3)
    c = create_conv("Hashed_0.1", 8, 8, 3)
    assert torch.equal(a.index, b.index) and not torch.equal(a.index, c.index)
    assert "index" in dict(a.named_buffers()) and "index" not in dict(a.named_parameters())
    assert a.index.dtype == torch.int32 and int(a.index.max()) < a.budget == 57


def test_compressed_parameters_follow_the_reference_groups():
    def names(m):
        ids = {id(p) for p in m.compressed_parameters()}
        return sorted(n for n, p in m.named_parameters() if id(p) in ids)

    assert names(create_conv("Generic_0.5", 8, 8, 3)) == [
        "lowrank_contract.weight",
        "lowrank_expand.weight",
    ]
    assert names(create_conv("Hashed_0.5", 8, 8, 3)) == ["hashed_weight"]
    assert names(create_conv("SepHashed_0.5", 8, 8, 3)) == ["hashed.bias", "hashed.hashed_weight"]
    assert names(create_conv("ACDC", 8, 8, 3)) == ["A", "D"]
    assert len(names(create_conv("Shuffle_2", 8, 8, 3))) == 3  # the depthwise one included
    assert names(create_conv("TensorTrain_0.5", 8, 8, 3)) == ["factors.0", "factors.1", "factors.2"]


def test_layers_build_on_the_meta_device_and_count_there():
    for spec in SPECS:
        with torch.device("meta"):
            layer = create_conv(spec, 16, 32, 3, stride=2, padding=1)
        assert all(p.is_meta for p in layer.parameters())
        r = count(layer, (16, 8, 8))
        # the counts of the same layer with real weights on the CPU
        real = count(create_conv(spec, 16, 32, 3, stride=2, padding=1), (16, 8, 8))
        assert r.unsupported == [] and real.unsupported == []
        got = (r.params, r.macs, r.macs_executed)
        assert got == (real.params, real.macs, real.macs_executed), spec
        if spec == "Conv":  # dense, no bias: 16 x 32 x 3 x 3 weights, each used at 4 x 4 outputs
            assert (r.params, r.macs) == (16 * 32 * 9, 16 * 32 * 9 * 16)


def test_module_examples_run():
    for module in (lowrank_module, shuffle_module):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("spec", SPECS)
def test_device_and_dtype_reach_every_parameter_and_buffer(spec):
    layer = create_conv(spec, 8, 16, 3, padding=1, device="meta", dtype=torch.float64)
    tensors = [*layer.parameters(), *layer.buffers()]
    assert all(t.is_meta for t in tensors)
    assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float64}
    layer = create_conv(spec, 8, 16, 3, padding=1, dtype=torch.float64)
    assert layer(torch.rand(1, 8, 4, 4, dtype=torch.float64)).dtype == torch.float64
