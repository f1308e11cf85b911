"""The sidecar: `<first output without extension>.json` beside a task's outputs.

It says which task, fingerprint and request made the outputs, so a lost ledger
can adopt finished work instead of paying for it again. Never holds the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.ledger.durable import write_atomic
from pipeline.task import IMAGE_FORMATS, Task


def write_sidecar(task: Task, first_ext: str, record: Mapping[str, Any]) -> Path:
    """`<first output without extension>.json`: what was asked and what came back."""
    path = task.sidecar_path(first_ext)
    body = json.dumps(record, ensure_ascii=False, indent=2, default=str)
    # One fsync per task, the image's: a sidecar is only read to adopt work a lost ledger
    # forgot, and one that a power cut left empty or cut is unreadable JSON, so never
    # adopted: it costs a re-send, like the ledger's own last commits (synchronous=NORMAL).
    write_atomic(path, body.encode("utf-8") + b"\n", sync=False)
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
