"""Keep one answer collected from a batch: outputs, then the sidecar, then the ledger's success.

The same writer as a live answer (writer.result_of / write_result: each image
fsynced and renamed, the sidecar last; what was written recorded with the
success, and the endpoint that produced it), and the same spool when a folder
refuses the files (disk full, read-only): the paid answer is kept beside the
ledger and the next run writes it without a new request. It never decides
whether a task runs and never prices an answer (the caller does).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pipeline.gateway.client import Answer
from pipeline.ledger.store import Ledger
from pipeline.run.spool import kept_or_lost
from pipeline.run.writer import result_of, write_result
from pipeline.task import Task
from pipeline.views.logs import event
from pipeline.views.tally import Tally


async def save_answer(task: Task, fingerprint: str, answer: Answer, *, attempts: int,
                      cost: float, ledger: Ledger, tally: Tally, endpoint: str, spool: Path,
                      disk: Callable[[Callable[[], Any]], Awaitable[Any]],
                      extra: dict[str, Any] | None = None) -> list[Path] | None:
    """Write, record and count one answer; the output paths, or None when its folder refused
    it (then it is in the spool, the task failed with the reason). `disk` runs the writing
    off the event loop."""
    record: dict[str, Any] = {
        "task_id": task.id, "fingerprint": fingerprint, "model": task.model,
        "route": answer.route, "prompt": task.prompt, "request": dict(task.fields),
        "inputs": [str(p) for p in task.images],
        "mask": str(task.mask) if task.mask else None,
        "usage": answer.usage, "revised_prompt": answer.revised_prompt,
        "request_id": answer.request_id, "attempts": attempts, "cost": cost,
        "finished_at": time.time(), "endpoint": endpoint, **(extra or {}),
    }
    if answer.notes:  # what the answer held that was ignored (extra images, bad usage)
        record["notes"] = list(answer.notes)
    result = result_of(task, fingerprint, answer.images, answer.formats, record)
    try:
        written = await disk(lambda: write_result(result))
    except OSError as exc:
        reason = kept_or_lost(spool, result, exc, record)
        ledger.mark_failed(task.id, fingerprint, terminal=False, reason=reason,
                           error_type="not_written",
                           error_code=errno.errorcode.get(exc.errno or 0))
        ledger.flush()
        tally.failed += 1
        tally.spent += cost
        tally.failure(task.id, reason)
        event(logging.ERROR, "task not written", id=task.id, error=reason)
        return None
    ledger.mark_succeeded(task.id, fingerprint, result.outputs, result.sidecar,
                          usage=answer.usage, cost=cost, request_id=answer.request_id,
                          written=written, endpoint=endpoint)
    event(logging.INFO, "task succeeded", id=task.id, attempts=attempts,
          outputs=",".join(str(p) for p in result.outputs), cost=round(cost, 4))
    tally.succeeded += 1
    tally.wrote([str(p) for p in result.outputs])
    tally.spent += cost
    return result.outputs
