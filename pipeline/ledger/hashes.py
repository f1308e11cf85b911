"""The ledger's file cache: (path, size, mtime) → the sha256 of the bytes, the format
sniffed and what a full decode of the file found.

Owns the `file_hashes` rows (mixed into Ledger: one connection, one batch of
writes), so a re-run over an unchanged catalog neither reads nor decodes a file,
and a file whose bytes were checked under another path is not decoded again.
It never opens a file itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any


class FileHashes:
    _db: sqlite3.Connection
    _write: Callable[[str, tuple[Any, ...]], sqlite3.Cursor]
    _wrote: Callable[[], None]

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str,
                      format: str | None = None) -> None:
        self._write(
            "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256, format)"
            " VALUES (?, ?, ?, ?, ?)",
            (str(path), size, mtime_ns, sha256, format),
        )
        self._wrote()

    def file_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        row = self._db.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), size, mtime_ns)).fetchone()
        return str(row[0]) if row else None

    def known_input(self, path: Path, size: int, mtime_ns: int) -> tuple[str, str] | None:
        """(format, verdict) of this unchanged file from its last full check, if any."""
        row = self._db.execute(
            "SELECT format, verdict FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?"
            " AND verdict IS NOT NULL", (str(path), size, mtime_ns)).fetchone()
        return (row[0] or "", row[1]) if row else None

    def known_content(self, sha256: str) -> tuple[str, str] | None:
        """(format, verdict) of any file with these bytes, from its full check."""
        row = self._db.execute("SELECT format, verdict FROM file_hashes WHERE sha256 = ?"
                               " AND verdict IS NOT NULL LIMIT 1", (sha256,)).fetchone()
        return (row[0] or "", row[1]) if row else None

    def remember_input(self, path: Path, size: int, mtime_ns: int, sha256: str,
                       format: str | None, verdict: str) -> None:
        """The file's hash and what its full decode found: a re-run reads nothing."""
        self._write(
            "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256, format, verdict)"
            " VALUES (?, ?, ?, ?, ?, ?)", (str(path), size, mtime_ns, sha256, format, verdict))
        self._wrote()

