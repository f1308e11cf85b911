"""Keep one paid answer: outputs, then the sidecar, then the ledger's success, then the tally.

The one way an answer is kept, whether it came live (scheduler.py) or in a
batch's output file (batch.py): the same writer, the same sidecar, the same
ledger row, so a batch result is indistinguishable on disk from a live one.
It never decides whether a task runs and never prices an answer (the caller does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pipeline.gateway.client import Answer
from pipeline.ledger.sidecar import write_sidecar
from pipeline.ledger.store import Ledger
from pipeline.run.writer import write_outputs
from pipeline.task import Task
from pipeline.views.logs import event
from pipeline.views.tally import Tally


async def save_answer(task: Task, fingerprint: str, answer: Answer, *, attempts: int,
                      cost: float, ledger: Ledger, tally: Tally,
                      disk: Callable[[Callable[[], Any]], Awaitable[Any]],
                      extra: dict[str, Any] | None = None,
                      before_write: Callable[[], object] | None = None) -> list[Path]:
    """Write, record and count one answer; returns the output paths. `disk` runs the writing
    off the event loop (the scheduler's DiskWriter); `before_write` runs there first (a redo
    keeps the rejected image aside)."""
    record: dict[str, Any] = {
        "task_id": task.id, "fingerprint": fingerprint, "model": task.model,
        "prompt": task.prompt, "request": dict(task.fields),
        "inputs": [str(p) for p in task.images],
        "mask": str(task.mask) if task.mask else None,
        "usage": answer.usage, "revised_prompt": answer.revised_prompt,
        "request_id": answer.request_id, "attempts": attempts, "cost": cost,
        "finished_at": time.time(), **(extra or {}),
    }
    if answer.notes:  # what the answer held that was ignored (extra images, bad usage)
        record["notes"] = list(answer.notes)

    def write() -> tuple[list[Path], Path]:
        if before_write is not None:
            before_write()
        outputs = write_outputs(task, answer.images, answer.formats)
        record["outputs"] = [str(p) for p in outputs]
        return outputs, write_sidecar(task, answer.formats[0], record)

    # Disk writes (with fsync) go to a thread so the event loop keeps sending.
    outputs, sidecar = await disk(write)
    ledger.mark_succeeded(task.id, fingerprint, outputs, sidecar, usage=answer.usage,
                          cost=cost, request_id=answer.request_id)
    event(logging.INFO, "task succeeded", id=task.id, attempts=attempts,
          outputs=",".join(str(p) for p in outputs), cost=round(cost, 4))
    tally.succeeded += 1
    tally.wrote([str(p) for p in outputs])
    tally.spent += cost
    return outputs
