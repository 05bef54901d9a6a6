"""Plugins: other packages add models, substitutes, attacks, data sets and cost formulas.

A package declares entry points in one of the groups of `PLUGIN_GROUPS`; each names an object
to load: a function, called with no arguments, that registers into nettle's registries, or a
module whose import registers (its decorators run). In `pyproject.toml`:

    [project.entry-points."nettle.models"]
    my-nets = "my_package.nettle_plugin:register"

    [project.entry-points."nettle.attacks"]
    my-attacks = "my_package.attacks"

Nothing is loaded at import. A registry loads its group once, the first time a name is not
found in it or its names are listed (`list_models()`, `create_model("my-net")`); `count`
loads `nettle.formulas` before its first pass. A plugin that fails to load, or whose function
raises (a name registered twice), is one warning naming the entry point, logged on
`nettle.plugins`, and never stops an unrelated command; `-v` adds the traceback.
"""

from __future__ import annotations

import importlib.metadata
import logging
from types import ModuleType

__all__ = ["PLUGIN_GROUPS", "load_plugins", "plugin_group"]

log = logging.getLogger(__name__)

PLUGIN_GROUPS: dict[str, str] = {
    "model": "nettle.models",
    "substitute": "nettle.substitutes",
    "attack": "nettle.attacks",
    "dataset": "nettle.datasets",
    "formula": "nettle.formulas",
}
"""Entry-point group of each kind of component, keyed by the registry's kind."""

_loaded: set[str] = set()  # groups whose entry points were loaded (or tried) in this process


def plugin_group(kind: str) -> str | None:
    """The entry-point group that fills registries of `kind`, or None."""
    return PLUGIN_GROUPS.get(kind)


def load_plugins(group: str) -> list[str]:
    """Load every entry point of `group` once per process; return the names loaded now.

    Entry points run in name order. The group counts as loaded before the first one runs, so
    a plugin that looks names up while it registers does not start the loading again.

    Example:
        >>> load_plugins("nettle.attacks")  # doctest: +SKIP
        ['my-attacks']
    """
    if group in _loaded:
        return []
    _loaded.add(group)
    done = []
    found = importlib.metadata.entry_points(group=group)
    for ep in sorted({(e.name, e.value): e for e in found}.values(), key=lambda e: e.name):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as exc:  # a broken plugin must not stop unrelated work
            first = next(iter(str(exc).splitlines()), "")
            log.warning(
                "plugin %s = %s (%s) failed to load: %s%s",
                ep.name,
                ep.value,
                group,
                type(exc).__name__,
                f": {first}" if first else "",
            )
            log.debug("traceback of plugin %s", ep.name, exc_info=True)
            continue
        done.append(ep.name)
    return done
