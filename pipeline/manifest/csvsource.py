"""CSV files as task sources: one row, one task; columns fill `{placeholders}`.

Owns reading a CSV file as a stream of rows, each with the line it starts on
(UTF-8 with or without a BOM, Excel quoting, cells spanning lines), and filling
`{column}` templates from a row. It never holds the whole file, never builds
tasks and never looks at images: manifest.py decides what a row means.
"""

from __future__ import annotations

import csv
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_FORMATTER = string.Formatter()


class CsvError(Exception):
    """The file cannot be read as CSV. `line` is 1-based (0 = the file as a whole)."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Row:
    line: int  # where the row starts in the CSV file, 1-based (the header is line 1)
    values: Mapping[str, str]
    extra: int = 0  # non-empty cells beyond the header: usually a comma that needed quotes


def placeholders(template: str) -> list[str]:
    """Names used as `{name}` in template. Raises ValueError on a stray brace."""
    return [name for _, name, _, _ in _FORMATTER.parse(template) if name is not None]


def fill(template: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """The template with each `{column}` replaced; and the columns that were missing or empty.

    Raises ValueError on a stray brace or a bad format spec.
    """
    out: list[str] = []
    empty: list[str] = []
    for literal, name, spec, conversion in _FORMATTER.parse(template):
        out.append(literal)
        if name is None:
            continue
        value = values.get(name, "")
        if not value:
            empty.append(name)
            continue
        try:
            out.append(format(_FORMATTER.convert_field(value, conversion), spec or ""))
        except ValueError as exc:
            raise ValueError(f"{{{name}:{spec}}} cannot format {value!r}: {exc}") from None
    return "".join(out), empty


def _lines(fh: BinaryIO) -> Iterator[str]:
    """Decoded one line at a time, so a bad byte is reported on its own line.

    Lines keep their endings, as csv wants (quoted line breaks survive); the first
    line drops Excel's BOM.
    """
    for number, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise CsvError(f"not UTF-8 text ({exc.reason}): save it as 'CSV UTF-8'",
                           number) from None


def _header(cells: list[str]) -> list[str]:
    names = [cell.strip() for cell in cells]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise CsvError(f"column {name!r} appears twice in the header: rename one", 1)
        seen.add(name)
    return names


def header(path: Path) -> list[str]:
    """The column names from the first row. Raises OSError or CsvError."""
    with open(path, "rb") as fh:
        for _, cells in _records(csv.reader(_lines(fh))):
            return [name for name in _header(cells) if name]
    raise CsvError("the file is empty: the first row must name the columns", 1)


def _records(reader: Iterable[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) for each non-blank record; wraps quoting errors."""
    it = iter(reader)
    last = 0
    while True:
        try:
            cells = next(it)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvError(f"not valid CSV: {exc}", last + 1) from None
        first, last = last + 1, reader.line_num  # type: ignore[attr-defined]
        if any(cell.strip() for cell in cells):
            yield first, cells


def rows(path: Path) -> Iterator[Row]:
    """Stream the data rows, skipping blank ones. Raises OSError or CsvError while iterating."""
    with open(path, "rb") as fh:
        records = _records(csv.reader(_lines(fh)))
        first = next(records, None)
        if first is None:
            raise CsvError("the file is empty: the first row must name the columns", 1)
        names = _header(first[1])
        width = len(names)
        for line, cells in records:
            values = {name: cell.strip() for name, cell in zip(names, cells, strict=False) if name}
            extra = sum(1 for cell in cells[width:] if cell.strip())
            yield Row(line, values, extra)
