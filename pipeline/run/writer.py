"""Put a task's returned images on disk, whole or not at all, before their sidecar.

Every file goes to a temporary name in its final folder, is fsynced, then
`os.replace`d into place, so a kill -9 at any moment leaves either the old
file, the new file, or a stray temp file that the next write ignores, never
a half-written image. The writer never decides whether a task should run and
never writes the API key: the sidecar holds request fields only.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.ledger.durable import write_atomic
from pipeline.task import Task


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
