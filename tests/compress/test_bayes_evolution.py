"""Recording the first Bayesian layer over epochs and drawing it."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from nettle.compress.bayes_evolution import (
    EvolutionRecorder,
    evolution_gif,
    frame_images,
    plot_evolution,
    write_evolution,
)
from nettle.nn.bayesian import Conv2dGroupNJ, LinearGroupNJ

pytestmark = pytest.mark.usefixtures("one_thread")


def _conv() -> Conv2dGroupNJ:
    layer = Conv2dGroupNJ(1, 2, 2)
    with torch.no_grad():
        layer.weight_mu.copy_(torch.arange(8.0).view(2, 1, 2, 2))
        layer.z_mu.copy_(torch.tensor([1.0, 2.0]))
        layer.z_logvar.copy_(torch.tensor([-10.0, 5.0]))
    return layer


def test_frames_at_the_chosen_epochs_survive_a_checkpoint_and_a_resume(tmp_path):
    layer = _conv()
    recorder = EvolutionRecorder(layer, every=2, epochs=5)
    for epoch in range(5):
        recorder.record(epoch)
        with torch.no_grad():
            layer.weight_mu.add_(1.0)  # one epoch of "training"
    assert [f.epoch for f in recorder.frames] == [0, 2, 4]
    assert recorder.frames[1].weight_mu[0, 0, 0, 0].item() == 2.0  # after two epochs
    torch.save({"evolution": recorder.state()}, tmp_path / "ckpt.pt")
    resumed = EvolutionRecorder(layer, every=2, epochs=5)
    resumed.load_state(torch.load(tmp_path / "ckpt.pt", weights_only=True)["evolution"])
    resumed.record(4)  # resumed inside epoch 4: the frame of its start is kept as it was
    assert [f.epoch for f in resumed.frames] == [0, 2, 4]
    assert resumed.frames[2].weight_mu[0, 0, 0, 0].item() == 4.0
    resumed.record_final()
    assert [f.epoch for f in resumed.frames] == [0, 2, 4, 5]
    assert EvolutionRecorder(layer, every=0, epochs=5).frames == []


def test_large_layers_keep_only_their_first_output_units():
    layer = LinearGroupNJ(10, 8)
    recorder = EvolutionRecorder(layer, every=1, epochs=1, max_weights=25)
    recorder.record(0)
    (frame,) = recorder.frames
    assert frame.weight_mu.shape == (2, 10) and frame.z_mu.shape == (10,)


def test_conv_frame_images_are_the_posterior_filters_and_log_alpha():
    recorder = EvolutionRecorder(_conv(), every=1, epochs=1)
    recorder.record(0)
    weights, log_alpha = frame_images(recorder.frames[0], threshold=-3.0)
    # two 2x2 filters side by side with a blank column: w * z = [0..3] * 1 and [4..7] * 2
    assert weights.shape == (2, 5) and np.isnan(weights[:, 2]).all()
    assert weights[:, :2].tolist() == [[0, 1], [2, 3]]
    assert weights[:, 3:].tolist() == [[8, 10], [12, 14]]
    # channel 0: log alpha = -10 - log(1 + 1e-8) kept; channel 1: 5 - log 4 >= -3, pruned
    assert log_alpha.shape == (1, 2)
    assert log_alpha[0, 0] == pytest.approx(-10.0) and np.isnan(log_alpha[0, 1])


def test_linear_log_alpha_of_a_square_input_is_drawn_as_an_image():
    recorder = EvolutionRecorder(LinearGroupNJ(64, 3), every=1, epochs=1)
    recorder.record(0)
    weights, log_alpha = frame_images(recorder.frames[0], threshold=0.0)
    assert weights.shape == (3, 64) and log_alpha.shape == (8, 8)


def test_write_evolution_draws_the_strip_and_one_gif_frame_per_record(tmp_path):
    layer = _conv()
    recorder = EvolutionRecorder(layer, every=1, epochs=3)
    for epoch in range(3):
        recorder.record(epoch)
    recorder.record_final()
    files = write_evolution(recorder.frames, tmp_path / "bayes")
    assert sorted(files) == ["gif", "png"]
    assert files["gif"].read_bytes()[:6] == b"GIF89a"
    gif = Image.open(files["gif"])
    assert (gif.format, gif.n_frames) == ("GIF", 4)
    assert Image.open(files["png"]).format == "PNG"
    fig = plot_evolution(recorder.frames, most=2)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["epoch 0", "epoch 3"]
    assert Image.open(io.BytesIO(evolution_gif(recorder.frames, most=2))).n_frames == 2
    assert write_evolution([], tmp_path / "none") == {}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "evolution.png").write_bytes(b"not nettle's")
    with pytest.raises(ValueError, match="not written by nettle"):
        write_evolution(recorder.frames, tmp_path / "mine")
    assert (tmp_path / "mine" / "evolution.png").read_bytes() == b"not nettle's"
