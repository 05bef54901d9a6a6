"""`nettle export` and `export_model`: substitutes folded into plain layers, every format loads
back and computes the model's outputs (max abs difference <= 1e-5), latencies beside the
teacher's, and nothing is written over a file nettle did not write."""

import json

import pytest
import torch
from torch import nn

from nettle.cli import main
from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment
from nettle.models.export import export_model, fast_model, load_export
from nettle.nn.substitutes import create_conv

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = ["HashedDecimate", "SepHashed_0.3", "ACDC_3", "TensorTrain_0.5", "Tucker_0.5", "CP_0.5"]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    layers = [create_conv(spec, 8, 8, 3, padding=1, bias=True) for spec in SPECS]
    stem = nn.Conv2d(3, 8, 3, padding=1)
    return nn.Sequential(stem, *layers, create_conv("Shuffle_2", 8, 8, 1), nn.Flatten()).eval()


def _x(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, 6, 6, generator=torch.Generator().manual_seed(1))


def test_fast_model_leaves_only_torch_layers_where_substitutes_rebuilt_weights():
    net = _net()
    fast, replaced = fast_model(net)
    assert replaced == {
        "HashedConv2d": 1,
        "HashedSeparable": 1,
        "ACDC": 1,
        "TensorTrain": 1,
        "Tucker": 1,
        "CP": 1,
        "LinearShuffleNet": 1,  # grouped 1x1s and the shuffle folded into dense 1x1s
    }
    assert all(type(m).__module__.startswith("torch.nn") for m in fast.modules())
    assert type(net[1]).__name__ == "HashedConv2d"  # the model itself is left as it was
    with torch.no_grad():
        torch.testing.assert_close(fast(_x()), net(_x()), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "fmt",  # torch.export takes 5-25 s on two busy cores, the ONNX exporter 15-40 s more
    [
        "torchscript",
        pytest.param("pt2", marks=pytest.mark.slow),
        pytest.param("onnx", marks=pytest.mark.slow),
    ],
)
def test_each_format_loads_back_and_computes_the_models_outputs(tmp_path, fmt):
    net = _net()
    result = export_model(net, _x(), fmt, tmp_path / f"net.{fmt}")
    assert result.max_abs_diff <= 1e-5 and result.input_shape == [3, 6, 6]
    loaded = load_export((tmp_path / f"net.{fmt}").read_bytes(), fmt)
    with torch.no_grad():
        for batch in (1, 5):  # the batch dimension stays dynamic
            want = net(_x(batch))
            assert (loaded(_x(batch)) - want).abs().max() <= 1e-5


def test_a_file_nettle_did_not_write_is_never_replaced(tmp_path):
    mine = tmp_path / "model.pt2"
    mine.write_bytes(b"my own file")
    with pytest.raises(ValueError, match="exists and was not written by nettle"):
        export_model(_net(), _x(), "torchscript", mine)
    assert mine.read_bytes() == b"my own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]
    with pytest.raises(ValueError, match="unknown format 'tflite'; choose one of onnx"):
        export_model(_net(), _x(), "tflite", tmp_path / "x")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher and a distilled student with hashed convolutions (simple-cnn, digits)."""
    root = tmp_path_factory.mktemp("runs")
    train = {"epochs": 1, "device": "cpu", "tensorboard": False}
    model = {"name": "simple-cnn", "kwargs": {"width": 8}}
    run_experiment(load_config_dict({"name": "t", "model": model, "train": train}), root / "t")
    student = {
        "name": "s",
        "model": {**model, "conv": "HashedDecimate"},
        "train": train,
        "distill": {"teacher": str(root / "t")},
    }
    run_experiment(load_config_dict(student), root / "s")
    return root


def test_export_a_distilled_student_and_time_it_beside_its_teacher(runs, capsys):
    argv = ["export", str(runs / "s"), "--format", "torchscript", "--batch", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    path = runs / "s" / "exports" / "model.torchscript.pt"
    assert out["path"] == str(path) and path.is_file()
    assert out["max_abs_diff"] <= 1e-5 and out["input_shape"] == [1, 8, 8]
    assert out["replaced"] == {"HashedConv2d": 2}
    names = [row["name"] for row in out["latency"]]
    assert names == ["exported (torchscript)", "run model", "teacher"]
    for row in out["latency"]:
        assert [t["batch_size"] for t in row["latencies"]] == [1, 4]
        assert all(t["median_s"] > 0 for t in row["latencies"])
    assert main([*argv[:4], "--no-latency"]) == 0  # nettle's own file: replaced
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"wrote {path} (torchscript, input 1x8x8")
    assert len(lines) == 2  # the file and the check; no latency lines


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_export_a_run_in_the_torch_export_formats(runs, capsys, fmt):
    assert main(["export", str(runs / "s"), "--format", fmt, "--batch", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_abs_diff"] <= 1e-5 and out["path"].endswith(f"model.{fmt}")
    assert [row["name"] for row in out["latency"]] == [f"exported ({fmt})", "run model", "teacher"]


def test_bad_run_dir_format_or_output_is_one_line(runs, tmp_path, capsys):
    foreign = tmp_path / "mine.pt2"
    foreign.write_text("keep me")
    for argv, why in [
        ([str(tmp_path / "nope"), "--format", "pt2"], "not a run dir"),
        ([str(tmp_path), "--format", "pt2"], "no config; is"),
        (
            [str(runs / "s"), "--format", "tflite"],
            "unknown format 'tflite'; choose one of onnx, torchscript, pt2",
        ),
        ([str(runs / "s"), "--format", "pt2", "--batch", "0"], "--batch must be in 1..4096"),
        ([str(runs / "s"), "--format", "pt2", "-o", str(foreign)], "was not written by nettle"),
    ]:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    assert foreign.read_text() == "keep me"
