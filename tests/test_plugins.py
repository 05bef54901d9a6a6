"""Plugins by entry points: loaded once, on a registry miss or a listing; broken ones warn."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from nettle import plugins
from nettle.registry import UnknownNameError

GROUP = "nettle-test.gadgets"


def _distribution(root, name, entry_points, modules):
    """A distribution importlib.metadata finds on sys.path: modules, METADATA, entry points."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, eps in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))


@pytest.fixture
def gadgets(tmp_path, monkeypatch):
    """A registry of kind "gadget" filled by four plugins of GROUP, one of them broken."""
    modules = {
        "nettle_test_holder": f"""
            from nettle.registry import Registry
            GADGETS = Registry("gadget", plugins={GROUP!r})
            CALLS = []
            """,
        "nettle_test_blue": """
            from nettle_test_holder import CALLS, GADGETS
            def register():
                CALLS.append("blue")
                GADGETS.add("blue", 1)
                assert "nothing-here" not in GADGETS  # a lookup while loading: no recursion
            """,
        "nettle_test_red": """
            from nettle_test_holder import CALLS, GADGETS
            CALLS.append("red")
            GADGETS.add("red", 2)
            """,
        "nettle_test_twice": """
            from nettle_test_holder import GADGETS
            def register():
                GADGETS.add("blue", 3)
            """,
    }
    eps = {
        "blue": "nettle_test_blue:register",
        "broken": "nettle_test_missing:register",
        "red": "nettle_test_red",
        "twice": "nettle_test_twice:register",
    }
    _distribution(tmp_path, "nettle-test-gadgets", {GROUP: eps}, modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_loaded", set())
    yield __import__("nettle_test_holder")
    for name in modules:
        sys.modules.pop(name, None)


def test_a_miss_loads_the_group_once_and_broken_plugins_warn(gadgets, caplog):
    assert gadgets.CALLS == []  # nothing at import
    with caplog.at_level(logging.WARNING, logger="nettle.plugins"):
        assert gadgets.GADGETS.get("red") == 2
        with pytest.raises(UnknownNameError, match="known: blue, red"):
            gadgets.GADGETS.get("green")
    assert gadgets.CALLS == ["blue", "red"]
    assert gadgets.GADGETS.get("blue") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "plugin broken = nettle_test_missing:register (nettle-test.gadgets) failed to load: "
        "ModuleNotFoundError: No module named 'nettle_test_missing'",
        "plugin twice = nettle_test_twice:register (nettle-test.gadgets) failed to load: "
        "ValueError: gadget 'blue' is already registered",
    ]
    assert plugins.load_plugins(GROUP) == []


def test_listing_loads_plugins_and_a_hit_does_not(gadgets):
    gadgets.GADGETS.add("local", 0)
    assert gadgets.GADGETS.get("local") == 0
    assert gadgets.CALLS == []
    assert gadgets.GADGETS.names() == ["blue", "local", "red"]
    assert len(gadgets.GADGETS) == 3


def test_load_plugins_returns_what_loaded(gadgets):
    assert plugins.load_plugins(GROUP) == ["blue", "red"]
    assert plugins.plugin_group("model") == "nettle.models"
    assert plugins.plugin_group("schedule") is None


TINY_PLUGIN = """
    from torch import nn

    from nettle.models import MODELS


    def register_models():
        @MODELS.register("tiny-plugin-net")
        def tiny(num_classes=10, in_channels=3, conv=None):
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))
    """
TINY_ATTACK = """
    from dataclasses import dataclass

    from nettle.attack.base import ATTACKS, Attack


    @dataclass
    class StillConfig:
        eps: float = 0.0


    @ATTACKS.register("tiny-plugin-still")
    class Still(Attack):
        Config = StillConfig

        def perturb(self, x, y, target):
            return x
    """


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder holding a working plugin (a model and an attack) and a broken one."""
    root = tmp_path_factory.mktemp("plugins")
    eps = {
        "nettle.models": {"tiny": "tiny_plugin:register_models"},
        "nettle.attacks": {"still": "tiny_plugin_attack"},
    }
    _distribution(
        root, "tiny-plugin", eps, {"tiny_plugin": TINY_PLUGIN, "tiny_plugin_attack": TINY_ATTACK}
    )
    broken = {"nettle.models": {"broken": "broken_plugin:register"}}
    _distribution(root, "broken-plugin", broken, {"broken_plugin": "raise ImportError('no')"})
    return root


def _nettle(root, *argv):
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_counts_a_plugin_model_and_names_the_broken_plugin(plugin_path):
    done = _nettle(
        plugin_path, "-m", "nettle", "count", "tiny-plugin-net", "--input", "1x8x8", "--json"
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["params"], out["macs"]) == (64 * 10 + 10, 64 * 10)
    warnings = [line for line in done.stderr.splitlines() if "nettle.plugins" in line]
    assert warnings == [
        "WARNING nettle.plugins: plugin broken = broken_plugin:register (nettle.models) failed "
        "to load: ImportError: no"
    ]


def test_a_broken_plugin_leaves_other_commands_working(plugin_path):
    done = _nettle(plugin_path, "-m", "nettle", "count", "simple-cnn", "--input", "1x8x8", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"] == 94_186
    assert "nettle.plugins" not in done.stderr  # no lookup missed: nothing was loaded


def test_a_plugin_attack_is_listed_and_created(plugin_path):
    code = (
        "import torch; from nettle.attack import create_attack, list_attacks;"
        "print('tiny-plugin-still' in list_attacks());"
        "a = create_attack('tiny-plugin-still', torch.nn.Linear(2, 2));"
        "print(type(a).__name__)"
    )
    done = _nettle(plugin_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "Still"]
