import numpy as np
import pytest
import torch
from torch import nn

from nettle.inspect.widgets import FeatureMapViewer

pytestmark = pytest.mark.usefixtures("one_thread")


def _viewer() -> tuple[FeatureMapViewer, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return FeatureMapViewer(model, x, ["0", "3"]), model, x


def _map_data(viewer: FeatureMapViewer) -> np.ndarray:
    return np.array(viewer.figure.axes[1].images[0].get_array())


def test_draw_shows_the_chosen_channel_of_the_chosen_input():
    viewer, model, x = _viewer()
    viewer.draw("0", channel=1, index=2)
    first = _map_data(viewer)
    with torch.no_grad():
        np.testing.assert_allclose(first, model[0](x)[2, 1].numpy(), rtol=1e-6)
    viewer.draw("0", channel=3, index=2)
    second = _map_data(viewer)
    assert not np.allclose(first, second)  # the image data changed with the channel
    np.testing.assert_allclose(second, model[0](x)[2, 3].detach().numpy(), rtol=1e-6)
    viewer.draw("3", channel=0, index=4)
    assert _map_data(viewer).shape == (1, 3) and viewer.channels("3") == 1
    assert len(viewer.figure.axes) == 3  # input, map and one colour bar, not one per redraw


def test_bad_choices_are_one_line():
    viewer, _, _ = _viewer()
    with pytest.raises(ValueError, match=r"channel 4 of layer '0' is outside 0\.\.3"):
        viewer.draw("0", channel=4)
    with pytest.raises(ValueError, match=r"input 5 is outside 0\.\.4"):
        viewer.draw("0", index=5)
    with pytest.raises(ValueError, match=r"layer '1' is not viewed; viewed: 0, 3"):
        viewer.draw("1")


def test_the_widgets_redraw_when_the_channel_changes():
    pytest.importorskip("ipywidgets")
    viewer, _, _ = _viewer()
    box = viewer.widget()
    c = box.controls
    before, data = bytes(c["image"].value), _map_data(viewer)
    assert before.startswith(b"\x89PNG")
    c["channel"].value = 2
    assert viewer.state == ("0", 2, 0)
    assert bytes(c["image"].value) != before and not np.allclose(_map_data(viewer), data)
    c["layer"].value = "3"  # one unit row: the channel slider shrinks to 0..0
    assert c["channel"].max == 0 and viewer.state == ("3", 0, 0)
