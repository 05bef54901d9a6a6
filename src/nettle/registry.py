"""One small name -> object registry; each kind of component keeps one instance.

Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(): ...
    >>> MODELS.get("tiny")  # doctest: +ELLIPSIS
    <function tiny at ...>

Other packages add entries through entry points (`nettle.plugins`): a registry loads its
group the first time a name is missing or its names are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nettle.plugins import load_plugins, plugin_group

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A case-insensitive mapping from names to objects, filled by decorators.

    Args:
        kind: what the registry holds ("model", "dataset", ...), used in error messages.
        plugins: the entry-point group of plugins that register into it (default: the group
            of `kind` in `nettle.plugins.PLUGIN_GROUPS`, None for kinds without plugins).
    """

    def __init__(self, kind: str, plugins: str | None = None) -> None:
        self.kind = kind
        self.plugins = plugins if plugins is not None else plugin_group(kind)
        self._items: dict[str, T] = {}

    def _load_plugins(self) -> None:
        if self.plugins is not None:
            load_plugins(self.plugins)

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower()

    def add(self, name: str, obj: T) -> T:
        """Register `obj` under `name`; a duplicate name raises `ValueError`."""
        key = self._key(name)
        if key in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[key] = obj
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator form of `add`; the name defaults to the object's `__name__`."""

        def decorator(obj: T) -> T:
            return self.add(name if name is not None else obj.__name__, obj)  # type: ignore[attr-defined]

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered under `name` or raise `UnknownNameError`."""
        if self._key(name) not in self._items:
            self._load_plugins()
        try:
            return self._items[self._key(name)]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """The registered names, sorted (plugins loaded first)."""
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if self._key(name) not in self._items:
            self._load_plugins()
        return self._key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
