"""Every substitute traces with torch.fx: the graph computes what the module does, and
torchvision's feature extraction (an fx tracer of its own) takes a net built from it."""

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from nettle.nn.substitutes import SUBSTITUTES, list_substitutes

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {  # a setting each substitute accepts on the shapes below (None: its default)
    "acdc": 3,
    "cp": 0.5,
    "generic": 0.25,
    "hashed": 0.3,
    "lr": 0.25,
    "originalacdc": 3,
    "permutedacdc": 3,
    "sephashed": 0.3,
    "shuffle": 2,
    "tensortrain": 0.5,
    "tucker": 0.5,
    "cp4": 0.5,
    "tensortrain4": 0.5,
    "tucker4": 0.5,
}


def _net(name: str) -> nn.Sequential:
    """Three layers of substitute `name`: channels grow (8 -> 16), a strided 3x3, then a 1x1."""
    make = SUBSTITUTES.get(name)
    setting = SETTINGS.get(name)
    torch.manual_seed(0)
    return nn.Sequential(
        make(8, 16, 3, padding=1, bias=True, setting=setting),
        nn.ReLU(),
        make(16, 16, 3, stride=2, padding=1, setting=setting),
        nn.ReLU(),
        make(16, 16, 1, setting=setting),
    ).eval()


def test_the_settings_name_registered_substitutes():
    assert set(SETTINGS) <= set(list_substitutes())


def _leaf_types(graph: torch.fx.GraphModule) -> set[type]:
    """The classes of the modules the graph calls as leaves (not traced into)."""
    calls = [n.target for n in graph.graph.nodes if n.op == "call_module"]
    return {type(graph.get_submodule(target)) for target in calls}


@pytest.mark.parametrize("name", list_substitutes())
@pytest.mark.parametrize("size", [8, 1], ids=["many-pixels", "one-pixel"])
def test_the_traced_graph_computes_what_the_module_does(name, size):
    net = _net(name)
    graph = torch.fx.symbolic_trace(net)
    if name != "conv":  # substitutes are traced into: only torch.nn's own layers stay leaves
        assert all(t.__module__.startswith("torch.nn.") for t in _leaf_types(graph))
    x = torch.randn(2, 8, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # eval fast paths (ACDC's cached N x N map against the FFT chain the traced graph
        # runs for few pixels; Shuffle's dense 1x1s against its grouped ones) agree to
        # rounding; every other graph computes the same numbers
        rounding = "acdc" in name or name == "shuffle"
        torch.testing.assert_close(graph(x), net(x), rtol=0, atol=1e-6 if rounding else 0)


@pytest.mark.parametrize("name", list_substitutes())
def test_feature_extraction_takes_a_net_of_each_substitute(name):
    net = _net(name)
    extractor = create_feature_extractor(net, {"1": "first", "3": "second", "4": "out"})
    x = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = extractor(x)
        first = torch.relu(net[0](x))
        second = torch.relu(net[2](first))
        assert torch.equal(features["first"], first)
        assert torch.equal(features["second"], second)
        assert torch.equal(features["out"], net(x))
    shapes = [tuple(f.shape) for f in features.values()]
    assert shapes == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 4, 4)]
