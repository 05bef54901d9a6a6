import base64
import json

import pytest
import torch
from matplotlib.image import imread

from nettle.cli import main
from nettle.config import load_config_dict
from nettle.experiment.run import run_experiment
from nettle.inspect import FieldTracer, capture
from nettle.inspect.report import default_layer, inspect_run
from nettle.models.build import load_run_model
from nettle.train.data import create_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

EXTRA = {"attributions", "weights", "interpolation_grid"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """simple-cnn (width 8) trained for 2 epochs on the digits."""
    tree = {
        "name": "t",
        "model": {"name": "simple-cnn", "kwargs": {"width": 8}},
        "train": {"epochs": 2, "device": "cpu", "tensorboard": False},
    }
    run = tmp_path_factory.mktemp("inspect") / "run"
    run_experiment(load_config_dict(tree), run)
    return run


def _not_blank(path):
    pixels = imread(path)
    return pixels.ndim == 3 and pixels[..., :3].var() > 1e-3


def test_inspect_run_defaults_pages_and_brute_force_patches(run_dir, tmp_path):
    files = inspect_run(run_dir, tmp_path / "out", top=6)
    model = load_run_model(run_dir)
    # the default layer: stage1's conv sees 5x5 of the 8x8 input, stage2's conv all of it
    tracer = FieldTracer(model, (1, 8, 8))
    assert files.layer == default_layer(model, (1, 8, 8)) == "net.stage1.0"
    assert tracer.rect("net.stage1.0", (4, 4)).height == 5
    assert tracer.rect("net.stage2.0", (2, 2)).height == 8
    data = create_dataset("digits", "test")
    acts = capture(model, data, ["net.stage1.0"])["net.stage1.0"]  # (360, 16, 8, 8)
    assert files.channels == acts.mean((0, 2, 3)).argsort(descending=True)[:2].tolist()
    assert set(files.images) == {
        "filters",
        "history",
        *(f"top_patches_c{c}" for c in files.channels),
        *EXTRA,
    }
    for key, path in files.images.items():
        assert path.parent == tmp_path / "out" and _not_blank(path), key
        encoded = base64.b64encode(path.read_bytes()).decode()
        assert encoded in files.index_html.read_text()  # the HTML stands alone
        assert f"]({path.name})" in files.index_md.read_text()
    assert "net.stage2.2" in files.index_md.read_text()  # statistics table
    assert [s.name for s in files.stats][:2] == ["net.stem.0", "net.stem.2"]
    relu = next(s for s in files.stats if s.name == "net.stem.2")
    assert relu.min == 0 and relu.zero_fraction > 0
    # the report's patches are the brute-force top activations cropped by hand: two 3x3
    # convolutions with padding 1 see rows y-2..y+2 and columns x-2..x+2, clipped to 8x8
    from nettle.inspect import top_patches

    for c in files.channels:
        got = top_patches(model, data, files.layer, c, k=6)
        flat = acts[:, c].flatten(1)
        values, order = flat.max(1).values.sort(descending=True, stable=True)
        assert got.indices == order[:6].tolist()
        torch.testing.assert_close(torch.tensor(got.values), values[:6])
        for i, patch in zip(got.indices, got.patches):
            y, x = divmod(int(flat[i].argmax()), 8)
            img = data.tensors[0][i]
            assert torch.equal(patch, img[:, max(0, y - 2) : y + 3, max(0, x - 2) : x + 3])


def test_inspect_run_featurevis_and_errors(run_dir, tmp_path):
    files = inspect_run(
        run_dir, tmp_path, layer="net.stem.2", channels=[3], top=4, featurevis=True, steps=40
    )
    assert set(files.images) == {
        "filters",
        "history",
        "top_patches_c3",
        "featurevis_c3",
        *EXTRA,
    }
    assert _not_blank(files.images["featurevis_c3"])
    with pytest.raises(ValueError, match=r"'net\.fc'.*traceable conv layers: net\.stem\.0, "):
        inspect_run(run_dir, tmp_path, layer="net.fc")
    with pytest.raises(ValueError, match=r"no layer named 'nope'.*net\.stage2\.0"):
        inspect_run(run_dir, tmp_path, layer="nope")
    with pytest.raises(ValueError, match=r"channel 16 of layer 'net\.stem\.0' is outside 0\.\.7"):
        inspect_run(run_dir, tmp_path, layer="net.stem.0", channels=[16])


def test_inspect_cli(run_dir, tmp_path, capsys):
    argv = ["inspect", str(run_dir), "-o", str(tmp_path), "--channel", "1", "--channel", "5"]
    assert main([*argv, "--top", "3", "--max-examples", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layer"] == "net.stage1.0" and out["channels"] == [1, 5]
    assert set(out["images"]) == {
        "filters",
        "history",
        "top_patches_c1",
        "top_patches_c5",
        *EXTRA,
    }
    assert out["index_html"] == str(tmp_path / "index.html")
    assert main(["inspect", str(run_dir), "-o", str(tmp_path), "--layer", "net.pool"]) == 2
    assert "traceable conv layers" in capsys.readouterr().err


def test_inspect_cam_layer(run_dir, tmp_path, capsys):
    argv = ["inspect", str(run_dir), "-o", str(tmp_path / "a"), "--max-examples", "30"]
    assert main([*argv, "--top", "2", "--cam-layer", "net.stem.0"]) == 0
    page = (tmp_path / "a" / "index.html").read_text()
    assert "<dt>Grad-CAM layer</dt><dd>net.stem.0</dd>" in page
    assert main(["inspect", str(run_dir), "-o", str(tmp_path / "b"), "--cam-layer", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no layer named 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_the_evaluation_stage_takes_a_cam_layer_and_keeps_earlier_stage_keys(run_dir):
    from nettle.config import load_config
    from nettle.experiment.evaluation import _settings, run_stages

    base = load_config(run_dir / "config.yaml").model_dump(mode="json")
    plain = {"inspect": {"max_examples": 30, "top": 2}}
    cfg = load_config_dict(base | {"evaluate": plain})
    assert "cam_layer" not in _settings(cfg)["inspect"]  # an unset option leaves the key as it was
    chosen = {"inspect": plain["inspect"] | {"cam_layer": "net.stem.0"}}
    cfg = load_config_dict(base | {"evaluate": chosen})
    stage = run_stages(run_dir, cfg).inspect
    page = (run_dir / stage["result"]["folder"] / "index.html").read_text()
    assert "<dt>Grad-CAM layer</dt><dd>net.stem.0</dd>" in page


def test_the_evaluation_stages_run_with_evaluate_threads_then_restore_them(run_dir):
    from nettle.config import load_config
    from nettle.experiment.evaluation import run_stages

    base = load_config(run_dir / "config.yaml").model_dump(mode="json")
    stage = {"inspect": {"max_examples": 20, "top": 1, "layer": "net.stem.0"}, "count": None}
    stage["threads"] = 1
    torch.set_num_threads(2)
    try:
        seen = []
        progress = lambda event, info: seen.append((info["kind"], torch.get_num_threads()))  # noqa: E731
        run_stages(run_dir, load_config_dict(base | {"evaluate": stage}), progress)
        assert seen == [("inspect", 1)] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
