"""YAML read with bounds: file size, nesting depth and alias expansion; duplicate keys refused.

`yaml.safe_load` builds no objects but plain data, yet a 400-byte file of nested aliases
("billion laughs") stands for 9**9 values: cheap to parse (aliases share one object) but any
deep copy, JSON dump or validation expands it and takes minutes and gigabytes. This loader
counts, while it composes the document, how many values it would have if every alias were
expanded, and stops as soon as the count passes `max_nodes`; it also refuses nesting deeper
than `max_depth`, files larger than `max_bytes`, text that is not UTF-8, and a key given twice
in one mapping (YAML would keep the last silently). Every error is a `YAMLInputError`, a
`ValueError` whose one-line message names the source and, where known, the line.

Example:
    >>> load_yaml("train: {epochs: 3}")
    {'train': {'epochs': 3}}
    >>> load_yaml("a: 1\\na: 2", source="run.yaml")
    Traceback (most recent call last):
    ...
    nettle.safe_yaml.YAMLInputError: run.yaml: line 2: key 'a' is given twice (first on line 1)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YAMLInputError", "load_yaml", "load_yaml_file"]

MAX_BYTES = 1_000_000
"""Largest file `load_yaml_file` reads by default (a config is a few kilobytes)."""
MAX_DEPTH = 50
"""Deepest nesting of mappings and sequences."""
MAX_NODES = 100_000
"""Most values (scalars, mappings, sequences) of the document with every alias expanded."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLInputError(ValueError):
    """A YAML text that is refused; the message names its source and, where known, the line."""


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts expanded values and depth while composing."""

    def __init__(self, text: str, source: str, max_nodes: int, max_depth: int) -> None:
        super().__init__(text)
        self._source = source
        self._max_nodes = max_nodes
        self._max_depth = max_depth
        self._depth = 0
        self._total = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values in its expansion

    def _fail(self, mark: yaml.Mark | None, message: str) -> YAMLInputError:
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return YAMLInputError(f"{self._source}: {where}{message}")

    def _add(self, count: int, mark: yaml.Mark) -> None:
        self._total += count
        if self._total > self._max_nodes:
            raise self._fail(
                mark,
                f"the document expands to more than {self._max_nodes:,} values "
                "(aliases of aliases?); write the values out or use fewer aliases",
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    raise self._fail(
                        event.start_mark, f"alias *{event.anchor} refers to a value that holds it"
                    )
                self._add(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self._max_depth:
            raise self._fail(
                self.peek_event().start_mark,
                f"nested deeper than {self._max_depth} levels",
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = 1 + sum(self._sizes[id(c)] for c in _children(node))
        self._add(1, node.start_mark)
        return node

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = first_line.get(key)
                except TypeError:  # unhashable: the base class names the problem
                    continue
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise self._fail(
                        key_node.start_mark, f"key {key!r} is given twice (first on line {seen})"
                    )
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            raise self._fail(
                node.start_mark, f"an integer of {len(node.value):,} characters is too long"
            ) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)

# YAML 1.1 reads `1e-3` (no dot) as a string; YAML 1.2 and every person reads a number
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line messages as one line: where, what, and in which construct."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = ""
        if exc.context:
            at = exc.context_mark
            started = f", line {at.line + 1}" if at is not None and at is not mark else ""
            context = f" ({exc.context}{started})"
        return f"{where}{exc.problem}{context}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position + 1}: {exc.reason} (#x{exc.character:04x})"
    return " ".join(str(exc).split())


def load_yaml(
    text: str,
    source: str = "<yaml>",
    *,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse one YAML document of plain data (the safe schema) within the bounds.

    Args:
        text: the document.
        source: what to call it in error messages (a file name, an option).
        max_nodes: most values of the document with every alias expanded.
        max_depth: deepest nesting of mappings and sequences.

    Raises:
        YAMLInputError: invalid YAML, a bound passed, or a duplicate key (one-line message).
    """
    try:
        loader = _BoundedLoader(text, source, max_nodes, max_depth)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"{source}: not valid YAML: {_one_line(exc)}") from None


def load_yaml_file(
    path: str | Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Read a UTF-8 YAML file of at most `max_bytes` bytes with `load_yaml`.

    Raises:
        FileNotFoundError: `path` does not exist.
        YAMLInputError: too large, unreadable, not UTF-8, or refused by `load_yaml`.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        raise YAMLInputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise YAMLInputError(
            f"{path}: larger than {max_bytes:,} bytes; a YAML file here holds a few settings"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YAMLInputError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    return load_yaml(text, str(path), max_nodes=max_nodes, max_depth=max_depth)
