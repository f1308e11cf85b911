"""YAML with line numbers: every mapping and list remembers where its parts were written.

Owns turning YAML text into plain Python values whose containers carry 1-based
line numbers, so the manifest can say `manifest.yaml:7: tasks[2].prompt`. It
uses PyYAML's SafeLoader only (no arbitrary objects), and it never judges what
the values mean: schema checks belong to manifest.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, SequenceNode


class LineMap(dict[Any, Any]):
    """A dict that knows its own line and the line of each key."""

    def __init__(self, line: int = 0):
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A list that knows its own line and the line of each item."""

    def __init__(self, items: Iterable[Any] = (), line: int = 0,
                 item_lines: list[int] | None = None):
        super().__init__(items)
        self.line = line
        self.item_lines = item_lines or []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


@dataclass(frozen=True)
class Duplicate:
    """A key written twice in one mapping: PyYAML would silently keep the last."""

    key: str
    line: int
    first_line: int


class YamlSyntaxError(Exception):
    """The text is not YAML. `line` and `column` are 1-based (0 when PyYAML gave no mark)."""

    def __init__(self, message: str, line: int, column: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


# PyYAML's words for the mistakes people make most, and what to do about each.
_HINTS = (
    ("found character '\\t'", "YAML does not allow tabs for indentation; use spaces"),
    ("mapping values are not allowed", "a value that contains ': ' must be quoted (prompt: "
     "\"Recolor: navy\"), or a line here is missing its ':' or is indented wrong"),
    ("while scanning a quoted scalar", "a quote opened here is never closed"),
    ("found undefined alias", "text that starts with * must be quoted"),
    ("expected ',' or ']'", "a [list] is not closed with ]"),
    ("expected ',' or '}'", "a {mapping} is not closed with }"),
    ("expected <block end>", "this line is indented differently from the lines above it"),
    ("that cannot start any token", "text that starts with @, ` or % must be quoted"),
)


def _hint(text: str) -> str | None:
    return next((hint for words, hint in _HINTS if words in text), None)


class _LineLoader(yaml.SafeLoader):
    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[Duplicate] = []


def _construct_map(loader: _LineLoader, node: MappingNode) -> LineMap:
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merges the way SafeLoader does
    result = LineMap(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise YamlSyntaxError("a mapping key must be a plain value", line) from None
        if key in result.key_lines:
            loader.duplicates.append(Duplicate(str(key), line, result.key_lines[key]))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_list(loader: _LineLoader, node: SequenceNode) -> LineList:
    return LineList((loader.construct_object(child, deep=True) for child in node.value),
                    node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value])


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[arg-type]
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_list)  # type: ignore[arg-type]


def load(text: str) -> tuple[Any, list[Duplicate]]:
    """Parse one YAML document; return its value and any keys written twice.

    Raises YamlSyntaxError with the line PyYAML points at.
    """
    loader = _LineLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "not valid YAML"
        said = f"{problem} ({exc.context})" if exc.context else problem
        hint = _hint(said)
        message = f"{hint} (the parser says: {said})" if hint else said
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise YamlSyntaxError(message, line, column) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), 0) from None
    finally:
        loader.dispose()
