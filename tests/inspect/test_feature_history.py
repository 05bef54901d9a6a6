import pytest
import torch
from matplotlib.figure import Figure

from nettle.config import ConfigError, config_hash, load_config_dict
from nettle.experiment.run import run_experiment
from nettle.inspect import capture
from nettle.inspect.feature_history import (
    FOLDER,
    FeatureHistory,
    load_feature_history,
    plot_feature_history,
)
from nettle.models.build import load_run_model
from nettle.train.data import create_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

TREE = {
    "name": "fh",
    "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
    "data": {"subset": 200},
    "train": {"epochs": 2, "device": "cpu", "tensorboard": False},
}
HISTORY = {"layers": ["net.stem.2", "net.fc"], "epochs": [0, 2], "inputs": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run trained with and without a feature history."""
    root = tmp_path_factory.mktemp("fh")
    run_experiment(load_config_dict({**TREE, "feature_history": HISTORY}), root / "with")
    run_experiment(load_config_dict(TREE), root / "without")
    return root / "with", root / "without"


def test_history_is_recorded_and_leaves_the_weights_alone(runs):
    with_, without = runs
    history = load_feature_history(with_)
    assert history.epochs == [0, 2]
    assert sorted(p.name for p in (with_ / FOLDER).iterdir()) == [
        "epoch0000.pt",
        "epoch0002.pt",
        "inputs.pt",
    ]
    test = create_dataset("digits", "test")
    assert torch.equal(history.inputs, test.tensors[0][:5])
    assert torch.equal(history.labels, test.tensors[1][:5])
    model = load_run_model(with_, which="last")
    final = capture(model, history.inputs, ["net.stem.2", "net.fc"])
    assert history.maps["net.stem.2"].shape == (2, 5, 4, 8, 8)
    assert history.maps["net.fc"].shape == (2, 5, 10)
    for name, maps in final.items():
        torch.testing.assert_close(history.maps[name][1], maps)  # epoch 2 = the trained model
        assert not torch.allclose(history.maps[name][0], maps)  # epoch 0 differs
    other = load_run_model(without, which="last").state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, other[key]), key  # bit-exact on the CPU
    assert load_feature_history(without) is None


def test_the_section_is_an_execution_setting():
    a, b = load_config_dict(TREE), load_config_dict({**TREE, "feature_history": HISTORY})
    assert config_hash(a) == config_hash(b)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"layers": ["net.stem.9"]}, r"feature_history\.layers: no layer named 'net\.stem\.9'"),
        ({"layers": ["net.fc"], "epochs": [1, 7]}, r"feature_history\.epochs: \[7\] after the"),
        ({"layers": ["net.fc"], "epochs": [-1]}, "epochs must be a non-empty list of 0 or more"),
        ({"layers": []}, "feature_history.layers: List should have at least 1 item"),
        ({"layers": ["net.fc"], "inputs": 0}, "feature_history.inputs"),
    ],
)
def test_bad_sections_are_refused_before_any_file(tmp_path, history, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment(load_config_dict({**TREE, "feature_history": history}), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_damaged_file_is_one_line(runs, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(runs[0], run)
    (run / FOLDER / "epoch0002.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"epoch0002\.pt: not a feature history file"):
        load_feature_history(run)


def test_the_strip_draws_the_strongest_channel_per_epoch():
    maps = torch.zeros(3, 2, 4, 2, 2)
    maps[:, :, 2] = torch.arange(3.0).view(3, 1, 1, 1) + 1  # channel 2 is the strongest
    history = FeatureHistory([0, 1, 5], torch.rand(2, 1, 2, 2), torch.tensor([3, 4]), {"c": maps})
    fig = plot_feature_history(history, "c")
    assert isinstance(fig, Figure) and "channel 2" in fig._suptitle.get_text()
    rows = [ax for ax in fig.axes if ax.images]
    assert len(rows) == 4  # the inputs, then 3 epochs
    assert [ax.get_ylabel() for ax in rows] == ["input", "epoch 0", "epoch 1", "epoch 5"]
    assert [t.get_text() for t in rows[0].get_xticklabels()] == ["label 3", "label 4"]
    last = rows[3].images[0].get_array()  # input 1 (columns 3-4 after a gap) at epoch 5
    assert last.shape == (2, 5) and float(last[:, 3:5].mean()) == 3.0 and last.mask[:, 2].all()
    with pytest.raises(ValueError, match=r"channel 4 of layer 'c' is outside 0\.\.3"):
        plot_feature_history(history, "c", channel=4)


def test_inspect_draws_a_strip_per_recorded_layer(runs, tmp_path, monkeypatch):
    import sys

    from nettle.inspect.report import inspect_run

    monkeypatch.setitem(sys.modules, "captum", None)  # attributions left out, with a note
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    files = inspect_run(runs[0], tmp_path, top=2, max_examples=40)
    assert {"feature_history_net.stem.2", "feature_history_net.fc"} <= set(files.images)
    assert "attributions" not in files.images
    page = files.index_html.read_text()
    assert "pip install &#x27;nettle[attribution]&#x27;" in page
    assert "Feature maps of net.fc for fixed test inputs at each recorded epoch." in page


STEM = {"net.stem.2": torch.rand(5, 4, 8, 8)}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("inputs.pt", {"inputs": torch.rand(5, 1, 8, 8)}, r"inputs\.pt: not a feature history"),
        ("inputs.pt", [1, 2], r"inputs\.pt: not a feature history file \(no mapping"),
        ("epoch0002.pt", {"maps": {"net.fc": torch.rand(5, 10)}}, "of layer 'net.stem.2'"),
        ("epoch0002.pt", {"maps": {**STEM, "net.fc": torch.rand(5)}}, r"\(N=5, \.\.\.\) of"),
        ("epoch0002.pt", {"maps": {**STEM, "net.fc": torch.rand(4, 10)}}, "of layer 'net.fc'"),
    ],
)
def test_malformed_history_files_are_one_line(runs, tmp_path, name, content, message):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(runs[0], run)
    torch.save(content, run / FOLDER / name)
    with pytest.raises(ValueError, match=message):
        load_feature_history(run)


def test_sequence_labels_are_kept_as_minus_one(tmp_path):
    from torch import nn

    from nettle.inspect.feature_history import with_feature_history

    cfg = load_config_dict({**TREE, "feature_history": {"layers": ["0"], "epochs": [1]}})
    data = [(torch.rand(1, 4, 6), torch.tensor([1, 2, 3])), (torch.rand(1, 4, 6), torch.tensor(7))]
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    callback = with_feature_history(cfg, tmp_path, model, data, None)
    callback("start", {"step": 0, "epoch": 0})  # epoch 0 is not asked for
    callback("epoch", {"epoch": 1})
    history = load_feature_history(tmp_path)
    assert history.epochs == [1] and history.labels.tolist() == [-1, 7]
    torch.testing.assert_close(history.maps["0"][0], model(torch.stack([x for x, _ in data])))
