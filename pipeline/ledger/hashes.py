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
    # The rows of the paths last looked up (None: a path with no row), and of the look-up
    # before (the plan walks a chunk behind the check pass); the host sets both.
    _near: dict[str, _Row | None]
    _older: dict[str, _Row | None]
    # Path -> sha256 of files the check pass has just found unchanged (stat and row
    # agree) or just read, each taken once by the fingerprint that follows it; the host
    # sets it.
    _checked: dict[str, str]

    def look_up(self, paths: Iterable[Path]) -> None:
        """Load the rows of these paths (the next chunk a pass will ask about) in one
        query: a re-run of 100k files makes 200 queries, not 200,000. The rows of the
        look-up before are kept too, so the plan, a chunk behind the check pass and in
        chunks of other sizes, finds every row and vouched-for hash it needs."""
        names = [str(path) for path in paths]
        near, older = self._near, self._older
        if all(name in near or name in older for name in names):
            return  # the check pass looked these up already: the plan asks the same files
        names = list(dict.fromkeys(names))
        missing = [name for name in names if not self._held(name)]
        fresh = {name: self._held_row(name) for name in names}
        for start in range(0, len(missing), LOOK_UP_MAX):
            part = missing[start:start + LOOK_UP_MAX]
            marks = ",".join("?" * len(part))
            for path, *row in self._db.execute(
                    f"SELECT path, {_COLUMNS} FROM file_hashes WHERE path IN ({marks})", part):
                fresh[path] = tuple(row)  # type: ignore[assignment]
        self._older, self._near = self._near, fresh
        # Bounded by the two chunks: a hash no fingerprint took (validate's check) goes.
        self._checked = {name: sha256 for name, sha256 in self._checked.items()
                         if self._held(name)}

    def _held(self, name: str) -> bool:
        return name in self._near or name in self._older

    def _held_row(self, name: str) -> _Row | None:
        row = self._near.get(name)
        return row if row is not None or name in self._near else self._older.get(name)

    def _row(self, path: Path | str, size: int, mtime_ns: int) -> _Row | None:
        """This unchanged file's row: from the last look-ups when they named the path."""
        name = str(path)
        if self._held(name):
            row = self._held_row(name)
        else:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM file_hashes WHERE path = ?",
                                   (name,)).fetchone()
        return row if row is not None and row[0] == size and row[1] == mtime_ns else None

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str,
                      format: str | None = None) -> None:
        self._remember((size, mtime_ns, sha256, format, None, None, None), path)

    def file_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        row = self._row(path, size, mtime_ns)
        return row[2] if row else None

    def known_input(self, path: Path, size: int, mtime_ns: int) -> Known | None:
        """What the last full check of this unchanged file found, if it was checked."""
        name = str(path)
        row = self._row(name, size, mtime_ns)
        if row is None or row[4] is None:
            return None
        if self._held(name):
            self._checked[name] = row[2]
        return row[3] or "", row[4], row[5], row[6]

    def checked_hash(self, path: Path) -> str | None:
        """The sha256 of this file, when the check pass found it unchanged, or read it,
        moments ago (the same chunk or the one before): the fingerprint after it needs no
        second stat. Given once."""
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
        row = self._held_row(str(path))
        if row is None or row[5] is None or row[6] is None:
            return None
        return row[5], row[6]

    def remember_input(self, path: Path, size: int, mtime_ns: int, sha256: str,
                       format: str | None, verdict: str,
                       dimensions: Dimensions | None = None) -> None:
        """The file's hash and what its full decode found: a re-run reads nothing."""
        width, height = dimensions or (None, None)
        self._remember((size, mtime_ns, sha256, format, verdict, width, height), path)
        if self._held(str(path)):  # read in full just now and unchanged while read
            self._checked[str(path)] = sha256

    def remember_dimensions(self, path: Path, size: int, mtime_ns: int,
                            dimensions: Dimensions) -> None:
        """Width and height of a file checked before the ledger kept them."""
        row = self._row(path, size, mtime_ns)
        if row is not None:
            self._remember((*row[:5], *dimensions), path)  # type: ignore[arg-type]

    def _remember(self, row: _Row, path: Path) -> None:
        self._write(f"INSERT OR REPLACE INTO file_hashes (path, {_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (str(path), *row))
        for held in (self._near, self._older):
            if str(path) in held:
                held[str(path)] = row
        self._wrote()
