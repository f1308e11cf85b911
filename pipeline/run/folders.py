"""Before the first request: every output folder can take this run's outputs.

A folder that cannot be written, or lacks room for a rough estimate of what
will land there, would turn paid answers into lost ones: it is refused (exit 2,
naming the folder) before anything is sent. The same pass removes the temp
files a killed run left in those folders.

It never writes a user's file: the probe is a temp file of ours, removed at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import InputError
from pipeline.ledger.durable import TEMP_PREFIX, remove_stray_temps


def check(room: Mapping[str, int], *, clean: bool = True) -> None:
    """`room`: folder → bytes this run will write there. Raises InputError with every
    folder that cannot take them. `clean`: also remove dead runs' temp files there."""
    problems = []
    for name, needed in sorted(room.items()):
        folder = Path(name)
        if clean:
            remove_stray_temps(folder)
        existing = _nearest_existing(folder)
        problem = _unwritable(existing) or _no_room(existing, needed)
        if problem:
            problems.append(f"{folder}: {problem}")
    if problems:
        raise InputError("output folders that cannot take this run's results (nothing was "
                         "sent):\n  " + "\n  ".join(problems))


def _nearest_existing(folder: Path) -> Path:
    """The folder, or the closest parent that exists (the writer creates the rest)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _unwritable(folder: Path) -> str | None:
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-",
                                    suffix=".part")
    except OSError as exc:
        return (f"cannot write there ({exc.strerror or exc}): make it writable, or change "
                "the output template")
    os.close(fd)
    os.unlink(temp)
    return None


def _no_room(folder: Path, needed: int) -> str | None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= needed:
        return None
    return (f"{_mb(free)} free, about {_mb(needed)} needed for this run's outputs: free some "
            "space, or send fewer tasks at once (--limit)")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
