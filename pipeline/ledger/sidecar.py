"""The sidecar: `<first output without extension>.json` beside a task's outputs.

It says which task, fingerprint and request made the outputs, so a lost ledger
can adopt finished work instead of paying for it again. Never holds the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.ledger.durable import write_atomic
from pipeline.task import IMAGE_FORMATS, Task


def write_sidecar(task: Task, first_ext: str, record: Mapping[str, Any]) -> Path:
    """`<first output without extension>.json`: what was asked and what came back, and
    which manifest asked (its file name: a copied catalog keeps it, a second manifest
    writing into the same folder does not share it)."""
    path = task.sidecar_path(first_ext)
    # One fsync per task, the image's: a sidecar is only read to adopt work a lost ledger
    # forgot, and one that a power cut left empty or cut is unreadable JSON, so never
    # adopted: it costs a re-send, like the ledger's own last commits (synchronous=NORMAL).
    write_atomic(path, sidecar_body(task, record), sync=False)
    return path


def sidecar_body(task: Task, record: Mapping[str, Any]) -> bytes:
    body = {**record, "manifest": task.where.file.name}
    return json.dumps(body, ensure_ascii=False, indent=2, default=str).encode("utf-8") + b"\n"


def sidecar_paths(task: Task) -> list[Path]:
    # Named after output 0 without its extension: one name for every format, unless the
    # template uses {ext} before the last dot too (looked for once per new task, so cheap).
    one_name = task.output.endswith(".{ext}") and task.output.count("{ext") == 1
    return [task.sidecar_path(ext) for ext in (("png",) if one_name else IMAGE_FORMATS)]


def read_sidecar(task: Task) -> dict[str, Any] | None:
    """The sidecar of an earlier success, found whatever format it was saved in."""
    for path in sidecar_paths(task):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def owner(task: Task) -> str | None:
    """Why the files at `task`'s outputs are not its own, or None when they may be: no
    sidecar there, or one naming this task of this manifest."""
    for path in sidecar_paths(task):
        if not os.path.lexists(path):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{path.name} beside it is not a sidecar of imgedit"
        if not isinstance(data, dict):
            return f"{path.name} beside it is not a sidecar of imgedit"
        other = data.get("manifest", task.where.file.name)
        if data.get("task_id") != task.id or other != task.where.file.name:
            return f"its sidecar says task {data.get('task_id')!r} of {other}"
    return None
