"""Durable files: written whole under a temporary name, fsynced, then renamed into place.

Every file imgedit writes for a user (outputs, sidecars, the report) goes
through `write_atomic`, so a kill -9 at any moment leaves either the old file,
the new one, or a stray `.imgedit-<pid>-*.part` temp file, never a torn one.
The pid in the name lets the next run remove a dead run's temp files without
touching those of a live run writing into the same folder.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import secrets
from pathlib import Path

TEMP_PREFIX = ".imgedit-"
_TEMP = re.compile(r"^\.imgedit-(?:(\d+)-)?.*\.part$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What open() gives a new file (mkstemp's would be 0600): results are for the whole team.
FILE_MODE = 0o666 & ~_umask()
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_TOKEN = secrets.token_hex(3)  # another machine's process with our pid, on a shared disk
_COUNTER = itertools.count()  # thread-safe: next() on a count holds the GIL throughout


def is_temp_name(name: str) -> bool:
    """`.imgedit-*.part`: a file write_atomic had not finished."""
    return _TEMP.match(name) is not None


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> os.stat_result:
    """`path` holds the old bytes or `data`, never a mix; returns the file's stat (size,
    mtime). sync=False skips the fsync: still whole after a kill -9 (the page cache
    survives it), but after a power cut the new name may show an empty or cut file: only
    for files whose loss costs a re-send and which are checked when read (the sidecar),
    never for a user's image."""
    fd, temp = _new_temp(path)
    try:
        view = memoryview(data)  # a str is a TypeError here, before any write
        while view:
            if not (wrote := os.write(fd, view)):  # never for a file; a full disk raises
                raise OSError(errno.EIO, f"nothing more could be written to {path}")
            view = view[wrote:]
        if sync:
            os.fsync(fd)
        stat = os.fstat(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(temp).unlink(missing_ok=True)
        raise
    # No fsync of the folder: a power cut may undo the rename, and then the next run
    # sends the task again, as it would with the ledger's last commits. The data itself
    # is fsynced before the rename, so a torn image can never appear under the name.
    return stat


def _new_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside `path` (its folder made if missing), open for writing.

    Plain os.open, not tempfile.mkstemp: a run writes two files a task from its disk
    thread, and mkstemp's random names, file object and chmod were ~40 us of Python
    each (the GIL the event loop waits for). The name is this process's and a counter;
    O_EXCL refuses one a dead process left with the same pid, and the next number is
    tried."""
    for _ in range(100):
        temp = f"{path.parent}/{TEMP_PREFIX}{os.getpid()}-{_TOKEN}{next(_COUNTER)}.part"
        try:
            return os.open(temp, _FLAGS, FILE_MODE), temp
        except FileExistsError:
            continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(f"no free temporary name beside {path}")


def remove_stray_temps(folder: Path) -> int:
    """Remove the temp files of runs that died in `folder`; returns how many went.

    A file whose pid is a live process is left alone: it may be another manifest's run
    writing there now. (A file from another machine sharing the folder looks dead.)
    """
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        match = _TEMP.match(name)
        if match is None or (match.group(1) and _alive(int(match.group(1)))):
            continue
        try:
            os.unlink(folder / name)
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
