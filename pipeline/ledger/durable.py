"""Durable files: written whole under a temporary name, fsynced, then renamed into place.

Every file imgedit writes for a user (outputs, sidecars, the report) goes
through `write_atomic`, so a kill -9 at any moment leaves either the old file,
the new one, or a stray `.imgedit-*.part` temp file, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".imgedit-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes private (0600) files; results are for the whole team, like any file.
FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """`path` holds the old bytes or `data`, never a mix. sync=False skips the fsync:
    still whole after a kill -9 (the page cache survives it), but after a power cut the
    new name may show an empty or cut file: only for files whose loss costs a re-send
    and which are checked when read (the sidecar), never for a user's image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    # No fsync of the folder: a power cut may undo the rename, and then the next run
    # sends the task again, as it would with the ledger's last commits. The data itself
    # is fsynced before the rename, so a torn image can never appear under the name.
