"""count(backward=True), forward keyword inputs, parameters that are only placed, latency."""

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from nettle.cli import main
from nettle.measure import count
from nettle.measure.latency import measure_latency
from nettle.measure.report import Latency, format_latency

pytestmark = pytest.mark.usefixtures("one_thread")


def test_linear_backward_is_one_product_without_input_gradient_and_two_with_it():
    lin = nn.Linear(4, 3)
    r = count(lin, (4,), backward=True)
    assert (r.macs, r.backward_macs, r.training_macs) == (12, 12, 24)  # grad W = dy^T x
    x = torch.rand(1, 4, requires_grad=True)
    r = count(lin, [x], backward=True)
    assert (r.macs, r.backward_macs, r.training_macs) == (12, 24, 36)  # and grad x = dy W


def test_backward_of_a_small_network_by_hand():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    # forward 12 + 6; backward: second layer weight 6 + input 6, first layer weight 12
    assert count(mlp, (4,), backward=True).backward_macs == 24
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 5))
    r = count(net, (1, 8, 8), backward=True, batch_size=4)  # per example
    conv, fc = 2 * 6 * 6 * 9, 72 * 5
    assert (r.macs, r.backward_macs) == (conv + fc, conv + 2 * fc)


def test_backward_counts_on_the_meta_device_and_leaves_grads_and_modes_alone():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.Dropout(), nn.Linear(3, 2)).train()
    mlp[1].eval()
    cpu = count(mlp, (4,), backward=True)
    assert all(p.grad is None for p in mlp.parameters())
    assert [m.training for m in mlp.modules()] == [True, True, False, True]
    meta = count(mlp.to("meta"), (4,), backward=True)
    assert cpu.to_dict() == meta.to_dict()


def test_frozen_parameters_cost_no_weight_gradient():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    mlp[0].requires_grad_(False)
    assert count(mlp, (4,), backward=True).backward_macs == 6  # weight grad of the second only


def test_backward_is_in_the_json_only_when_measured():
    assert "backward_macs" not in count(nn.Linear(4, 3), (4,)).to_dict()
    assert count(nn.Linear(4, 3), (4,), backward=True).to_dict()["backward_macs"] == 12


def test_heavy_backward_ops_without_formula_are_reported():
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    r = count(nn.Sequential(nn.Linear(16, 16), Spectral()), (16,), backward=True)
    assert r.backward_macs == 256  # the Linear's weight gradient; the FFT's is not known
    assert r.unsupported == ["aten._fft_r2c in 1", "aten._fft_c2c in backward"]


def test_keyword_inputs_reach_the_forward():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, *, mask):
            return self.fc(x * mask)

    mask = torch.ones(1, 4)
    r = count(Masked(), (4,), forward_kwargs={"mask": mask}, backward=True)
    assert (r.macs, r.backward_macs, r.unsupported) == (12, 12, [])
    with pytest.raises(TypeError, match="mask"):
        count(Masked(), (4,))


class Tokens(nn.Module):
    """A ViT-like front: class token concatenated, position embedding added, a table and a
    parameter list read by the forward of their parent, never called themselves."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos = nn.Parameter(torch.zeros(1, 5, 8))
        self.table = nn.Embedding(5, 8)
        self.extra = nn.ParameterList([nn.Parameter(torch.zeros(8))])
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos
        return self.proj(x + self.table.weight + self.extra[0])


def test_parameters_that_are_only_placed_are_not_unsupported():
    r = count(Tokens(), (4, 8))
    assert (r.macs, r.unsupported) == (5 * 64, [])
    assert r.params == 8 + 40 + 40 + 8 + 72


def test_a_parameter_that_multiplies_or_meets_no_op_is_still_reported():
    class Scale(nn.Module):  # a layer scale, reshaped first as timm's ConvNeXt does
        def __init__(self):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.gamma.reshape(1, -1)

    class Outside(nn.Module):  # its weight goes to arithmetic the counter cannot see
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x):
            return torch.from_numpy(np.asarray(x) @ self.w.detach().numpy())

    r = count(nn.Sequential(Scale(), Outside()), (4,))
    assert r.unsupported == [
        "Scale at 0: no cost formula and no counted ops for its 4 parameters",
        "Outside at 1: no cost formula and no counted ops for its 16 parameters",
    ]


def test_latency_at_each_batch_on_the_named_device():
    lin = nn.Linear(4, 3).train()
    times = measure_latency(lin, (4,), (1, 8), min_run_time=0.01)
    assert [t.batch_size for t in times] == [1, 8]
    for t in times:
        assert t.device == f"cpu ({torch.get_num_threads()} threads)"
        assert 0 < t.median_s < math.inf and 0 <= t.iqr_s < math.inf and t.runs >= 1
    assert lin.training
    line = format_latency([Latency(4, "cpu (2 threads)", 0.002, 0.0001, 7)])
    assert (
        line
        == "batch 4 on cpu (2 threads): median 2.000 ms, IQR 0.100 ms, 2,000 examples/s (7 runs)"
    )


def test_latency_refuses_the_meta_device_and_empty_batches():
    with pytest.raises(ValueError, match="meta device"):
        measure_latency(nn.Linear(4, 3).to("meta"), (4,))
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        measure_latency(nn.Linear(4, 3), (4,), (0,))


def test_cli_backward_and_latency(capsys):
    argv = ["count", "simple-cnn", "--input", "1x8x8", "--backward", "--latency", "--batch", "4"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    # the stem's input needs no gradient: 2 x forward less the stem's 18,432
    assert "backward 4,739,584 MACs executed" in text and "training step 7,118,592 MACs" in text
    found = re.findall(
        r"batch (\d+) on cpu \(\d+ threads\): median ([\d.,]+) ms, IQR ([\d.,]+) ms", text
    )
    assert [b for b, _, _ in found] == ["1", "4"]
    assert all(0 < float(m.replace(",", "")) < math.inf for _, m, _ in found)


def test_cli_json_holds_backward_and_latency(capsys):
    argv = ["count", "simple-cnn", "--input", "1x8x8", "--backward", "--latency", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backward_macs"] == 4_739_584
    [t] = out["latency"]
    assert set(t) == {"batch_size", "device", "median_s", "iqr_s", "runs"}
    assert t["batch_size"] == 1 and t["device"].startswith("cpu (") and t["median_s"] > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch", "4"], "give --latency too"),
        (["--latency", "--batch", "0"], "--batch 0: expected at least 1"),
        (["--latency", "--device", "tpu"], "--device 'tpu'"),
    ],
)
def test_cli_refuses_latency_options_that_mean_nothing(capsys, extra, message):
    assert main(["count", "simple-cnn", "--input", "1x8x8", *extra]) == 2
    assert message in capsys.readouterr().err
