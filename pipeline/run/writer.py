"""Put a task's returned images on disk, whole or not at all, before their sidecar.

Every file goes to a temporary name in its final folder, is fsynced (the
images; see write_result for the sidecar), then `os.replace`d into place, so
a kill -9 at any moment leaves either the old file, the new file, or a stray
temp file that the next run removes, never a half-written image. The sidecar
comes last: it is what says the work is done, so it must never stand beside
images that are not there yet.

The writer never decides whether a task should run and never writes the API
key: the sidecar holds request fields only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ledger.durable import write_atomic
from pipeline.ledger.ours import Written, written
from pipeline.ledger.sidecar import sidecar_body
from pipeline.task import Task


@dataclass(frozen=True)
class Result:
    """A paid answer as the files it becomes: each image, then the sidecar, last."""

    task_id: str
    fingerprint: str
    files: tuple[tuple[Path, bytes], ...]

    @property
    def outputs(self) -> list[Path]:
        return [path for path, _ in self.files[:-1]]

    @property
    def sidecar(self) -> Path:
        return self.files[-1][0]


def output_paths(task: Task, formats: list[str]) -> list[Path]:
    """Each image's path at the task's output template, never one of its inputs."""
    paths = [task.output_path(i, ext) for i, ext in enumerate(formats)]
    # Preflight refuses this, links resolved; this last guard is string work only, as it
    # runs once per task on the hot path.
    inputs = {os.path.normpath(p) for p in (*task.images, task.mask) if p is not None}
    for path in paths:
        if os.path.normpath(path) in inputs:
            raise ValueError(f"task {task.id}: output {path} would overwrite an input")
    return paths


def result_of(task: Task, fingerprint: str, images: list[bytes], formats: list[str],
              record: Mapping[str, Any]) -> Result:
    """The files an answer becomes; the sidecar records the outputs and the manifest."""
    paths = output_paths(task, formats)
    sidecar = sidecar_body(task, {**record, "outputs": [str(p) for p in paths]})
    files = (*zip(paths, images, strict=True), (task.sidecar_path(formats[0]), sidecar))
    return Result(task.id, fingerprint, tuple(files))


def write_result(result: Result) -> list[Written]:
    """Write every file in order (the sidecar last); what was written, for the ledger.

    Each image is fsynced before its rename; the sidecar is not (see write_sidecar: one
    that a power cut left cut is unreadable JSON, never adopted, and costs a re-send)."""
    last = len(result.files) - 1
    return [written(path, data, write_atomic(path, data, sync=number < last))
            for number, (path, data) in enumerate(result.files)]
