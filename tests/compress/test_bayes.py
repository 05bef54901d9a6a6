import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nettle.compress.bayes import BayesObjective, bayes_report, kl_weight
from nettle.compress.bayes_masks import layer_links
from nettle.compress.bayes_prune import (
    apply_compression,
    bayesian_layers,
    compress_bayesian,
    format_compression,
    group_masks,
    significand_bits,
)
from nettle.measure.timing import PhaseTimer
from nettle.nn.bayesian import Conv2dGroupNJ, LinearGroupNJ, bayesian_kl, clip_variances

pytestmark = pytest.mark.usefixtures("one_thread")


def _set(layer, z_logvar=None, **values):
    with torch.no_grad():
        for name, v in values.items():
            getattr(layer, name).fill_(v)
        if z_logvar is not None:
            layer.z_logvar.copy_(torch.as_tensor(z_logvar, dtype=layer.z_logvar.dtype))


def test_linear_eval_is_the_mean_and_matches_deterministic():
    torch.manual_seed(0)
    layer = LinearGroupNJ(5, 3).eval()
    x = torch.randn(4, 5)
    expected = F.linear(x * layer.z_mu, layer.weight_mu, layer.bias_mu)
    torch.testing.assert_close(layer(x), expected)
    layer.deterministic = True
    torch.testing.assert_close(layer(x), expected)


def test_conv_eval_matches_deterministic():
    torch.manual_seed(0)
    layer = Conv2dGroupNJ(2, 3, 3, stride=2, padding=1).eval()
    x = torch.randn(2, 2, 7, 7)
    mean = layer(x)
    layer.deterministic = True
    torch.testing.assert_close(layer(x), mean)
    assert mean.shape == nn.Conv2d(2, 3, 3, stride=2, padding=1)(x).shape


def test_deterministic_refuses_training_mode():
    layer = LinearGroupNJ(2, 2)
    layer.deterministic = True
    with pytest.raises(RuntimeError, match="inference"):
        layer(torch.randn(1, 2))


def test_training_samples_around_the_mean():
    torch.manual_seed(0)
    layer = LinearGroupNJ(4, 2)
    _set(layer, z_logvar=[-2.0] * 4, weight_logvar=-4.0, bias_logvar=-4.0)
    x = torch.randn(1, 4).expand(20000, 4)
    samples = layer.train()(x)
    mean = layer.eval()(x[:1])
    torch.testing.assert_close(samples.mean(0, keepdim=True), mean, atol=0.03, rtol=0.0)
    assert samples.std(0).min() > 0.01


def test_kl_matches_hand_computation():
    layer = LinearGroupNJ(2, 1)
    _set(layer, z_mu=1.0, z_logvar=[-1.0, -1.0], weight_mu=0.5, weight_logvar=-2.0)
    _set(layer, bias_mu=0.0, bias_logvar=0.0)
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    la = -1.0 - math.log(1.0 + 1e-8)
    kl_z = -2 * (k1 / (1 + math.exp(-(k2 + k3 * la))) - 0.5 * math.log1p(math.exp(-la)) - k1)
    kl_w = 2 * (0.5 * (math.exp(-2.0) + 0.25 - 1.0) + 1.0)
    kl_b = 0.0
    assert layer.kl_divergence().item() == pytest.approx(kl_z + kl_w + kl_b, rel=1e-5)
    model = nn.Sequential(layer, nn.ReLU(), LinearGroupNJ(1, 1))
    total = layer.kl_divergence() + model[2].kl_divergence()
    assert bayesian_kl(model).item() == pytest.approx(total.item())
    assert bayesian_kl(nn.Linear(2, 2)).item() == 0.0


def test_weight_kl_equals_torch_distributions():
    torch.manual_seed(1)
    layer = Conv2dGroupNJ(2, 2, 3)
    _set(layer, z_mu=1.0)
    with torch.no_grad():
        layer.z_logvar.fill_(-30.0)  # makes the group term's dependence negligible
    q = torch.distributions.Normal(layer.weight_mu, (0.5 * layer.weight_logvar).exp())
    p = torch.distributions.Normal(0.0, 1.0)
    qb = torch.distributions.Normal(layer.bias_mu, (0.5 * layer.bias_logvar).exp())
    expected = (
        torch.distributions.kl_divergence(q, p).sum()
        + torch.distributions.kl_divergence(qb, p).sum()
    )
    la = layer.log_alpha()
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    kl_z = -(k1 * torch.sigmoid(k2 + k3 * la) - 0.5 * F.softplus(-la) - k1).sum()
    torch.testing.assert_close(layer.kl_divergence(), expected + kl_z)


def test_clip_variances():
    layer = LinearGroupNJ(3, 2, clip_var=0.04)
    _set(layer, weight_logvar=0.0, bias_logvar=0.0)
    clip_variances(nn.Sequential(layer))
    assert layer.weight_logvar.max().item() == pytest.approx(math.log(0.04))
    assert layer.bias_logvar.max().item() == pytest.approx(math.log(0.04))


def test_significand_bits_by_hand():
    # 2*var = 0.1: round-offs 0.5, 0.25, 0.125 exceed it, 0.0625 does not -> 3 bits
    assert significand_bits(torch.full((10,), 0.05)) == 3
    assert significand_bits(torch.zeros(4)) == 23
    # mean over weights, then ceiling: (3 + 23) / 2 = 13
    assert significand_bits(torch.tensor([0.05, 0.0])) == 13


def _lenet_like():
    torch.manual_seed(0)
    return nn.Sequential(
        Conv2dGroupNJ(1, 4, 3, padding=1),
        nn.ReLU(),
        Conv2dGroupNJ(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        LinearGroupNJ(6 * 2 * 2, 5),
        nn.ReLU(),
        LinearGroupNJ(5, 3),
    )


def test_masks_chain_through_the_network():
    model = _lenet_like()
    conv1, conv2, fc1, fc2 = model[0], model[2], model[5], model[7]
    dead = 10.0  # log alpha = 10 > threshold
    with torch.no_grad():
        conv1.z_logvar[1] = dead  # conv1 channel 1 pruned -> conv2 input channel 1 gone
        conv2.z_logvar[2] = dead  # conv2 channel 2 pruned -> fc1 inputs 8..11 gone
        fc1.z_logvar[0:4] = dead  # all fc1 inputs of conv2 channel 0 -> channel 0 gone too
        fc2.z_logvar[3] = dead  # fc2 input 3 pruned -> fc1 output row 3 gone
    groups = group_masks(model, -3.0)
    assert [int(g.sum()) for g in groups] == [3, 5, 20, 4]
    report, _masks, bits = compress_bayesian(model, -3.0)
    # conv1: 3 filters x 1 x 9; conv2: 4 live filters x 3 live inputs x 9;
    # fc1: 4 live rows x 16 live inputs; fc2: 3 rows x 4 live inputs
    kept = [3 * 9, 4 * 3 * 9, 4 * 16, 3 * 4]
    assert [r.weights_kept for r in report.layers] == kept
    total = 4 * 9 + 6 * 4 * 9 + 5 * 24 + 3 * 5
    assert report.architecture_factor == pytest.approx(total / sum(kept))
    assert [r.groups_kept for r in report.layers] == [3, 4, 16, 4]
    assert all(0 < b <= 23 for b in bits)
    expected_bits = sum(k * (1 + report.exponent_bits + b) for k, b in zip(kept, bits))
    assert report.bit_precision_factor == pytest.approx(32 * sum(kept) / expected_bits)
    text = format_compression(report)
    assert text.startswith("architecture compression factor ")
    assert "bit-precision factor" in text and "fc" not in text.split("\n")[0]


def test_apply_compression_rounds_and_prunes():
    model = _lenet_like().eval()
    with torch.no_grad():
        model[7].z_logvar[0] = 10.0
    _, masks, bits = compress_bayesian(model, -3.0)
    apply_compression(model, masks, bits)
    fc2 = model[7]
    w = fc2.compressed_weight
    delta = 0.5 * 2.0 ** (1 - bits[3])
    assert torch.all(w[:, 0] == 0)
    torch.testing.assert_close(w / delta, torch.round(w / delta))
    x = torch.rand(2, 1, 2, 2)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_threshold_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 thresholds given for 4 Bayesian layers"):
        group_masks(_lenet_like(), [-3.0, -3.0, -3.0])
    with pytest.raises(ValueError, match="no Bayesian layers"):
        compress_bayesian(nn.Linear(2, 2))


def test_bayesian_run_on_digits_reports_compression(tmp_path):
    from nettle.config import load_config_dict
    from nettle.experiment.run import run_experiment

    cfg = load_config_dict(
        {
            "name": "bayes",
            "model": {"name": "bayes-lenet"},
            "bayes": {"threshold": -3.0},
            "train": {
                "epochs": 2,
                "device": "cpu",
                "tensorboard": False,
                "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
            },
        }
    )
    summary = run_experiment(cfg, tmp_path / "run")
    bayes = summary["bayes"]
    assert bayes["architecture_factor"] >= 1.0 and bayes["bit_precision_factor"] > 1.0
    assert 0.0 <= bayes["accuracy_reduced"] <= 1.0
    assert bayes["text"].startswith("architecture compression factor")
    assert [row["name"] for row in bayes["layers"]] == ["net.0", "net.3", "net.7", "net.9"]


def _one_linear():
    """Linear(4 -> 2): inputs 0 and 1 kept (log alpha -30), 2 and 3 pruned (log alpha 10);
    weight means 0.3, weight variances 0.05, so every posterior variance is 0.05 (+ e^-30)."""
    layer = LinearGroupNJ(4, 2)
    _set(layer, z_logvar=[-30.0, -30.0, 10.0, 10.0], z_mu=1.0, weight_mu=0.3)
    _set(layer, weight_logvar=math.log(0.05), bias_mu=0.0)
    return nn.Sequential(layer)


def test_report_factors_of_a_hand_built_layer():
    report, masks, bits = compress_bayesian(_one_linear(), -3.0)
    # 8 weights, 4 kept: architecture factor 2
    assert report.architecture_factor == 2.0
    # 2 * var = 0.1: 3 significand bits; max |mu| = 0.3: log2(0.3) + 1 < 1 -> 1 exponent bit
    assert bits == [3] and report.exponent_bits == 1
    (row,) = report.layers
    assert (row.groups, row.groups_kept, row.weights, row.weights_kept) == (4, 2, 8, 4)
    assert row.bits_per_weight == 1 + 1 + 3
    assert row.bit_precision_factor == report.bit_precision_factor == 32 / 5
    assert row.architecture_factor == 2.0 and report.total_factor == 2.0 * 6.4
    assert masks[0].tolist() == [[True, True, False, False]] * 2


def test_bayes_report_measures_pruned_then_reduced_and_restores():
    model = _one_linear()
    seen = []

    def accuracy(m):
        seen.append(m[0].compressed_weight.clone())
        return [0.75, 0.5][len(seen) - 1]

    out = bayes_report(model.eval(), -3.0, accuracy)
    # pruned: the posterior means with pruned inputs zeroed; reduced: rounded to 3 bits
    # (grid 0.5 * 2^(1 - 3) = 0.125: 0.3 -> 0.25)
    torch.testing.assert_close(seen[0], torch.tensor([[0.3, 0.3, 0.0, 0.0]] * 2))
    assert seen[1].tolist() == [[0.25, 0.25, 0.0, 0.0]] * 2
    assert (out["accuracy_pruned"], out["accuracy_reduced"]) == (0.75, 0.5)
    assert out["layers"][0]["architecture_factor"] == 2.0
    assert "accuracy after reduced precision 50.00% (after pruning 75.00%)" in out["text"]
    assert model[0].deterministic is False and model[0].compressed_weight is None


def test_kl_is_scaled_by_the_examples_not_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(LinearGroupNJ(3, 2)).eval()
    kl = bayesian_kl(model).item()
    for batch in (2, 5):
        x, y = torch.randn(batch, 3), torch.zeros(batch, dtype=torch.long)
        out = BayesObjective(num_examples=1000)(model, x, y, PhaseTimer())
        ce = F.cross_entropy(model(x), y).item()
        assert out.loss.item() == pytest.approx(ce + kl / 1000, rel=1e-6)
        assert out.parts["kl"].item() == pytest.approx(kl / 1000, rel=1e-6)


def test_kl_warmup_weights_per_epoch():
    assert [kl_weight(e, 4) for e in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [kl_weight(e, 0) for e in range(2)] == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least 0"):
        kl_weight(0, -1)
    torch.manual_seed(0)
    model = nn.Sequential(LinearGroupNJ(3, 2)).eval()
    objective = BayesObjective(num_examples=10, kl_warmup_epochs=4)
    x, y = torch.randn(2, 3), torch.zeros(2, dtype=torch.long)
    ce = F.cross_entropy(model(x), y).item()
    kl = bayesian_kl(model).item() / 10
    for epoch, weight in [(0, 0.0), (1, 0.25), (3, 0.75), (9, 1.0), (2, 0.5)]:
        objective.on_epoch_start(epoch, 10)  # a resumed run sets, never steps, the weight
        out = objective(model, x, y, PhaseTimer())
        assert out.parts["kl_weight"] == weight
        assert out.loss.item() == pytest.approx(ce + weight * kl, rel=1e-6)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Conv2dGroupNJ(2, 2, 1)
        self.b = Conv2dGroupNJ(2, 2, 1)
        self.c = Conv2dGroupNJ(2, 2, 1)

    def forward(self, x):
        x = torch.relu(self.a(x))
        return self.c(x + self.b(x))  # b feeds c only through a sum


def test_masks_follow_the_data_flow_not_the_module_order():
    model = _Residual()
    names = [n for n, _ in bayesian_layers(model)]
    # a feeds b through a ReLU, and also the sum; b and the sum feed c: no link b -> c
    assert layer_links(model, names) == [(0, 1, False, False)]
    with torch.no_grad():
        model.b.z_logvar[0] = 10.0  # b's channel 0 pruned: c still reads channel 0 via a
        model.a.z_logvar[1] = 10.0  # a's channel 1 pruned: b's input channel 1 gone
    _, masks, _ = compress_bayesian(model, -3.0)
    assert masks[1][:, :, 0, 0].tolist() == [[False, False], [True, False]]
    assert masks[2].all()


def test_links_are_found_through_the_input_normalisation_of_a_zoo_model():
    from nettle.compress.bayes_convert import convert_to_bayesian
    from nettle.models import create_model

    model = create_model("simple-cnn", num_classes=10, in_channels=1, mean=[0.5], std=[0.25])
    convert_to_bayesian(model)
    names = [n for n, _ in bayesian_layers(model)]
    assert names == ["net.stem.0", "net.stage1.0", "net.stage2.0", "net.fc"]
    # stem -> stage1 -> stage2 through BN, ReLU (and a max-pool); stage2 -> fc flattened
    assert layer_links(model, names) == [
        (0, 1, False, True),
        (1, 2, False, True),
        (2, 3, True, True),
    ]
