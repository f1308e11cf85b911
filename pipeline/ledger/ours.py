"""Which files on disk are ours: the outputs a task claimed before its request went out,
their sidecars, and our temp files; and whether a success's files are still the ones
it wrote.

Owns the `claims` table (an output stem → the task that writes there) and the
`written` record of a success (path, size, mtime, sha256 of each file). A glob
asks `is_ours` so it never takes one of our files for an input, whatever point a
crash stopped at; planning asks `still_written` so "done" means these very files.

It never deletes or writes a user's file and never decides what to send.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.ledger.durable import is_temp_name
from pipeline.task import EXT_MARK, IMAGE_FORMATS, Task

SIDECAR_SUFFIX = ".json"

# One output file as a success recorded it: path, size, mtime_ns, sha256.
Written = tuple[str, int, int, str]


def output_slots(task: Task) -> dict[str, set[str]]:
    """Each output's path without extension → the extensions it may be written with."""
    slots: dict[str, set[str]] = {}
    for index in range(task.n):
        try:
            shape = task.output_shape(index)
            # Text, not a Path: normpath below does what a Path would.
            paths = ([shape.replace(EXT_MARK, ext) for ext in IMAGE_FORMATS] if shape is not None
                     else [task.output_name(index, ext) for ext in IMAGE_FORMATS])
        except (KeyError, ValueError, IndexError):
            return {}  # a template preflight refuses: nothing can be written there
        for path in paths:
            stem, suffix = os.path.splitext(os.path.normpath(path))
            slots.setdefault(stem, set()).add(suffix.lower())
    return slots


def written(path: Path, data: bytes, stat: os.stat_result) -> Written:
    """The record of one file just written with `data`."""
    return (str(path), stat.st_size, stat.st_mtime_ns, hashlib.sha256(data).hexdigest())


def still_written(files: Iterable[Sequence[Any]]) -> bool:
    """Every file is still the one recorded: same size, and the same mtime or, when the
    mtime moved (a copy, a restore), the same bytes."""
    for path, size, mtime_ns, sha256 in files:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        if stat.st_size != size:
            return False
        if stat.st_mtime_ns != mtime_ns and _sha256(path) != sha256:
            return False
    return True


def _key(stem: str) -> int:
    # Python's own 64-bit string hash: the set lives in this process only, and a chance
    # collision costs one query (claimed_by asks the table), never a wrong answer.
    return hash(stem)


def _sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1024 * 1024):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class Claims:
    """The Ledger's half that knows our files (mixed into Ledger: one connection)."""

    _db: sqlite3.Connection
    _write: Callable[[str, tuple[Any, ...]], sqlite3.Cursor]

    def claim(self, task: Task, fingerprint: str) -> None:
        """Record every path `task` may write, before its request goes out (the caller
        commits: mark_submitted does, or its caller)."""
        for stem, suffixes in output_slots(task).items():
            self._claim(stem, task.id, fingerprint, suffixes)

    def _claim(self, stem: str, task_id: str, fingerprint: str, kinds: Iterable[str]) -> None:
        suffixes = sorted(kinds)
        if (known := self.__dict__.get("_stems")) is not None:
            known.add(_key(stem))
        if (kinds_known := self.__dict__.get("_suffixes")) is not None:
            kinds_known.update(suffixes)
        self._write("INSERT OR REPLACE INTO claims (stem, task_id, fingerprint, suffixes)"
                    " VALUES (?, ?, ?, ?)",
                    (stem, task_id, fingerprint, " ".join(suffixes)))

    def claim_written(self, task_id: str, fingerprint: str, files: Iterable[Written]) -> None:
        for path, *_ in files:
            stem, suffix = os.path.splitext(os.path.normpath(path))
            if suffix.lower() != SIDECAR_SUFFIX:
                self._claim(stem, task_id, fingerprint, [suffix.lower()])

    def claimed_by(self, path: Path | str) -> str | None:
        """The task that claimed this exact file (an output or its sidecar), or None."""
        stem, suffix = os.path.splitext(os.path.normpath(path))
        if _key(stem) not in self._claimed_stems():
            return None  # most files a glob meets: no query
        row = self._db.execute("SELECT task_id, suffixes FROM claims WHERE stem = ?",
                               (stem,)).fetchone()
        if row is None:
            return None
        task_id, suffixes = row
        return task_id if suffix.lower() in (*suffixes.split(), SIDECAR_SUFFIX) else None

    def _claimed_stems(self) -> set[int]:
        """Every claimed stem as a 64-bit key, loaded once: a glob over 100k photos asks
        for each, and a set answers in a fraction of a query's time (a few MB at 100k)."""
        known: set[int] | None = self.__dict__.get("_stems")
        if known is None:
            known = {_key(stem) for (stem,) in self._db.execute("SELECT stem FROM claims")}
            self.__dict__["_stems"] = known
        return known

    def _claimed_suffixes(self) -> set[str]:
        """Every extension a claimed file may carry, the sidecar's too, loaded once (a
        few, where the stems are 100k: 18 ms against 90 ms for a 100k-task ledger)."""
        known: set[str] | None = self.__dict__.get("_suffixes")
        if known is None:
            known = {SIDECAR_SUFFIX}
            for (kinds,) in self._db.execute("SELECT DISTINCT suffixes FROM claims"):
                known.update(kinds.split())
            self.__dict__["_suffixes"] = known
        return known

    def is_ours(self, path: Path) -> bool:
        """A file imgedit wrote or was about to write: never an input."""
        if is_temp_name(path.name):
            return True
        if path.suffix.lower() not in self._claimed_suffixes():
            return False  # `shirt.jpg` when we write .png: no lookup, no stems loaded
        return self.claimed_by(path) is not None

    @staticmethod
    def written_json(files: Iterable[Written]) -> str:
        return json.dumps([list(f) for f in files])
