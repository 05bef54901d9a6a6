"""Which convolutions each zoo family builds through the substitution hook (`conv=`)."""

import pytest
import torch
from torch import nn

from nettle.models import create_model
from nettle.nn.substitutes import get_conv_class


class Probe(nn.Conv2d):
    """A dense conv that marks the layers built through the hook."""


def _probe_hook(spec):
    """`get_conv_class` that answers the spec "Probe" with `Probe` convs; the rest as usual."""
    if spec != "Probe":
        return get_conv_class(spec)
    return lambda c_in, c_out, k, **kw: Probe(c_in, c_out, k, **kw)


@pytest.fixture
def probed(monkeypatch):
    for module in ("wrn", "resnet", "vgg", "simple_cnn"):
        monkeypatch.setattr(f"nettle.models.{module}.get_conv_class", _probe_hook)

    def build(name: str, **kwargs) -> dict[str, nn.Module]:
        with torch.device("meta"):
            model = create_model(name, conv="Probe", **kwargs)
        return dict(model.named_modules())

    return build


def _split(modules: dict[str, nn.Module]) -> tuple[list[str], list[str]]:
    probes = [n for n, m in modules.items() if type(m) is Probe]
    dense = [n for n, m in modules.items() if type(m) is nn.Conv2d]
    return probes, dense


def test_cifar_wrn_substitutes_only_the_block_3x3_convs(probed):
    modules = probed("wrn-28-10")
    probes, dense = _split(modules)
    assert len(probes) == 24  # Gray et al. 2019, section 3.1
    assert all(n.rsplit(".", 1)[1] in ("conv1", "conv2") for n in probes)
    assert all(modules[n].kernel_size == (3, 3) for n in probes)
    assert dense == ["conv1", "block1.0.shortcut", "block2.0.shortcut", "block3.0.shortcut"]
    assert [modules[n].stride for n in probes[::8]] == [(1, 1), (2, 2), (2, 2)]


def test_wrn_50_2_substitutes_bottlenecks_and_shortcuts(probed):
    modules = probed("wrn-50-2", num_classes=1000)
    probes, dense = _split(modules)
    assert len(probes) == 16 * 3 + 4  # every bottleneck conv and the 4 downsample convs
    shortcuts = [n for n in probes if n.endswith("downsample.0")]
    assert shortcuts == [f"layer{i}.0.downsample.0" for i in (1, 2, 3, 4)]
    assert [modules[n].stride for n in shortcuts] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert dense == ["conv1"]  # the 7x7 stem
    assert modules["layer1.0.conv2"].out_channels == 128  # doubled bottleneck width


def test_resnet18_substitutes_block_convs_and_shortcuts(probed):
    probes, dense = _split(probed("resnet18"))
    assert len(probes) == 8 * 2 + 3 and dense == ["conv1"]


@pytest.mark.parametrize(("name", "convs"), [("vgg11", 8), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_substitutes_every_conv_but_the_first(probed, name, convs):
    probes, dense = _split(probed(name))
    assert (len(probes), dense) == (convs - 1, ["features.0"])


def test_simple_cnn_substitutes_every_conv_but_the_first(probed):
    probes, dense = _split(probed("simple-cnn"))
    assert probes == ["stage1.0", "stage2.0"] and dense == ["stem.0"]


@pytest.mark.parametrize("name", ["wrn-28-10", "wrn-50-2", "vgg16", "simple-cnn"])
def test_classifier_is_never_substituted(probed, name):
    linears = [m for m in probed(name).values() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is nn.Linear for m in linears)
