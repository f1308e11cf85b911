"""Put a task's returned images on disk, whole or not at all, with a sidecar beside them.

Every file goes to a temporary name in its final folder, is fsynced, then
`os.replace`d into place, so a kill -9 at any moment leaves either the old
file, the new file, or a stray temp file that the next write ignores, never
a half-written image. The writer never decides whether a task should run and
never writes the API key: the sidecar holds request fields only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.task import IMAGE_FORMATS, Task

TEMP_PREFIX = ".imgedit-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes private (0600) files; results are for the whole team, like any file.
FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    # No fsync of the folder: a power cut may undo the rename, and then the next run
    # sends the task again, as it would with the ledger's last commits. The data itself
    # is fsynced before the rename, so a torn image can never appear under the name.


def write_outputs(task: Task, images: list[bytes], formats: list[str]) -> list[Path]:
    """Each image at the task's output template; returns the paths in order."""
    paths = [task.output_path(i, ext) for i, ext in enumerate(formats)]
    # Preflight refuses this, links resolved; this last guard is string work only, as it
    # runs once per task on the hot path.
    inputs = {os.path.normpath(p) for p in (*task.images, task.mask) if p is not None}
    for path in paths:
        if os.path.normpath(path) in inputs:
            raise ValueError(f"task {task.id}: output {path} would overwrite an input")
    for path, data in zip(paths, images, strict=True):
        write_atomic(path, data)
    return paths


def write_sidecar(task: Task, first_ext: str, record: Mapping[str, Any]) -> Path:
    """`<first output without extension>.json`: what was asked and what came back."""
    path = task.sidecar_path(first_ext)
    body = json.dumps(record, ensure_ascii=False, indent=2, default=str)
    write_atomic(path, body.encode("utf-8") + b"\n")
    return path


def read_sidecar(task: Task) -> dict[str, Any] | None:
    """The sidecar of an earlier success, found whatever format it was saved in."""
    # Named after output 0 without its extension: one name for every format, unless the
    # template uses {ext} before the last dot too (looked for once per new task, so cheap).
    one_name = task.output.endswith(".{ext}") and task.output.count("{ext") == 1
    for path in [task.sidecar_path(ext) for ext in (("png",) if one_name else IMAGE_FORMATS)]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None
