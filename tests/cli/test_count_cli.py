import json

import pytest

from nettle.cli import main
from nettle.measure import count
from nettle.models import create_model


def _simple_cnn_report():
    return count(create_model("simple-cnn", in_channels=1), (1, 8, 8))


def test_json_output_matches_the_library(capsys):
    assert main(["count", "simple-cnn", "--input", "1x8x8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = _simple_cnn_report()
    assert set(out) == {
        "params",
        "trainable_params",
        "macs",
        "macs_executed",
        "modules",
        "unsupported",
        "convention",
        "input_shape",
    }
    assert (out["params"], out["macs"], out["macs_executed"]) == (
        expected.params,
        expected.macs,
        expected.macs_executed,
    )
    assert (out["convention"], out["input_shape"], out["unsupported"]) == ("default", [1, 8, 8], [])
    assert [m["name"] for m in out["modules"]] == [m.name for m in expected.modules]
    assert sum(m["macs"] for m in out["modules"]) == out["macs"]


def test_convention_and_classes_reach_the_count(capsys):
    argv = ["count", "wrn-16-1", "--num-classes", "7", "--convention", "deficient-efficient"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model = create_model("wrn-16-1", num_classes=7)
    assert out["macs"] == count(model, (3, 32, 32), "deficient-efficient").macs
    assert out["params"] == sum(p.numel() for p in model.parameters())
    assert out["modules"][-1]["output_shape"] == [1, 7]


def test_table_lists_modules_and_totals(capsys):
    assert main(["count", "simple-cnn", "--input", "1x8x8", "--depth", "1"]) == 0
    text = capsys.readouterr().out
    r = _simple_cnn_report()
    assert "per example" in text and "stage1" in text and "stage1.0" not in text
    total = next(line for line in text.splitlines() if "total" in line)
    assert f"{r.params:,}" in total and f"{r.macs:,}" in total


@pytest.mark.parametrize(
    "argv, message",
    [
        (["count", "no-such-net"], "unknown model 'no-such-net'"),
        (["count", "simple-cnn", "--input", "1xa"], "--input '1xa': expected sizes joined by x"),
        (["count", "simple-cnn", "--input", "1x0x8"], "sizes must be positive"),
        (["count", "simple-cnn", "--convention", "flops"], "unknown counting convention"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
