"""The ledger's file cache: (path, size, mtime) → the sha256 of the bytes, the format
sniffed, and what a full decode of the file found (its verdict, width and height).

Owns the `file_hashes` rows (mixed into Ledger: one connection, one batch of
writes), so a re-run over an unchanged catalog neither reads nor decodes a file,
and a file whose bytes were checked under another path is not decoded again.
A pass over many files asks for a chunk of paths at once (`look_up`): one query,
then answers from memory, with memory bounded by the chunk.
It never opens a file itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.manifest.inputs import Dimensions, Known
# A row: size, mtime_ns, sha256, format, verdict, width, height.
_Row = tuple[int, int, str, str | None, str | None, int | None, int | None]
_COLUMNS = "size, mtime_ns, sha256, format, verdict, width, height"
LOOK_UP_MAX = 500  # paths a query names at most (SQLite allows 32766 parameters)


class FileHashes:
    _db: sqlite3.Connection
    _write: Callable[[str, tuple[Any, ...]], sqlite3.Cursor]
    _wrote: Callable[[], None]
    # The rows of the paths last looked up (None: a path with no row); the host sets it.
    _near: dict[str, _Row | None]
    # Path -> sha256 of files the check pass has just found unchanged (stat and row
    # agree), each taken once by the fingerprint that follows it; the host sets it.
    _checked: dict[str, str]

    def look_up(self, paths: Iterable[Path]) -> None:
        """Load the rows of these paths (the next chunk a pass will ask about) in one
        query, replacing the last chunk's: a re-run of 100k files makes 200 queries, not
        200,000."""
        names = list(dict.fromkeys(map(str, paths)))
        if all(name in self._near for name in names):
            return  # the check pass looked these up already: the plan asks the same chunk
        near: dict[str, _Row | None] = dict.fromkeys(names)
        for start in range(0, len(names), LOOK_UP_MAX):
            part = names[start:start + LOOK_UP_MAX]
            marks = ",".join("?" * len(part))
            for path, *row in self._db.execute(
                    f"SELECT path, {_COLUMNS} FROM file_hashes WHERE path IN ({marks})", part):
                near[path] = tuple(row)  # type: ignore[assignment]
        self._near = near
        self._checked = {}

    def _row(self, path: Path, size: int, mtime_ns: int) -> _Row | None:
        """This unchanged file's row: from the last look-up when it named the path."""
        name = str(path)
        if name in self._near:
            row = self._near[name]
        else:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM file_hashes WHERE path = ?",
                                   (name,)).fetchone()
        return row if row is not None and row[:2] == (size, mtime_ns) else None

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str,
                      format: str | None = None) -> None:
        self._remember((size, mtime_ns, sha256, format, None, None, None), path)

    def file_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        row = self._row(path, size, mtime_ns)
        return row[2] if row else None

    def known_input(self, path: Path, size: int, mtime_ns: int) -> Known | None:
        """What the last full check of this unchanged file found, if it was checked."""
        row = self._row(path, size, mtime_ns)
        if row is None or row[4] is None:
            return None
        if str(path) in self._near:
            self._checked[str(path)] = row[2]
        return row[3] or "", row[4], row[5], row[6]

    def checked_hash(self, path: Path) -> str | None:
        """The sha256 of this file, when the check pass found it unchanged moments ago (the
        same chunk): the fingerprint after it needs no second stat. Given once."""
        return self._checked.pop(str(path), None)

    def known_content(self, sha256: str) -> Known | None:
        """What the full check of any file with these bytes found."""
        row = self._db.execute("SELECT format, verdict, width, height FROM file_hashes"
                               " WHERE sha256 = ? AND verdict IS NOT NULL LIMIT 1",
                               (sha256,)).fetchone()
        return (row[0] or "", row[1], row[2], row[3]) if row else None

    def stored_dimensions(self, path: Path) -> Dimensions | None:
        """Width and height the ledger keeps for this file, from the last look-up: no
        stat, no query (for an estimate, right after the check pass vouched for it)."""
        row = self._near.get(str(path))
        if row is None or row[5] is None or row[6] is None:
            return None
        return row[5], row[6]

    def remember_input(self, path: Path, size: int, mtime_ns: int, sha256: str,
                       format: str | None, verdict: str,
                       dimensions: Dimensions | None = None) -> None:
        """The file's hash and what its full decode found: a re-run reads nothing."""
        width, height = dimensions or (None, None)
        self._remember((size, mtime_ns, sha256, format, verdict, width, height), path)

    def remember_dimensions(self, path: Path, size: int, mtime_ns: int,
                            dimensions: Dimensions) -> None:
        """Width and height of a file checked before the ledger kept them."""
        row = self._row(path, size, mtime_ns)
        if row is not None:
            self._remember((*row[:5], *dimensions), path)  # type: ignore[arg-type]

    def _remember(self, row: _Row, path: Path) -> None:
        self._write(f"INSERT OR REPLACE INTO file_hashes (path, {_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (str(path), *row))
        if str(path) in self._near:
            self._near[str(path)] = row
        self._wrote()
