"""The ledger's rows as data: what a task's row, an attempt's row and planning's
view of a task hold. Plain frozen types and one row converter; no SQL, no I/O."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.config.redact import clean_or_none
from pipeline.task import State

__all__ = ["Attempt", "Outcome", "TaskRecord", "TaskState", "task_record"]


class Outcome(enum.StrEnum):
    """What one HTTP attempt came to."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # failed, and another attempt follows
    FAILED = "failed"  # failed, and the task gives up
    UNKNOWN = "unknown"  # sent, no answer: may have been billed
    ABORTED = "aborted"  # cancelled (Ctrl-C, run aborted) before an answer


@dataclass(frozen=True)
class TaskRecord:
    """A task's row. outputs/sidecar/usage/cost/request_id describe its last success."""

    id: str
    fingerprint: str
    state: State
    terminal: bool
    reason: str | None
    error_type: str | None
    error_code: str | None
    attempts: int
    outputs: list[Path]
    sidecar: Path | None
    model: str | None
    prompt: str | None
    cost: float | None
    usage: dict[str, Any] | None
    request_id: str | None
    run_id: int | None
    updated_at: datetime
    first_input: Path | None


class TaskState(NamedTuple):
    """What planning needs of a task: is it done for this fingerprint, with outputs on disk?"""

    fingerprint: str
    state: State
    terminal: bool
    outputs: list[str]  # empty when `written` is known: its paths are the outputs
    written: list[list[Any]] | None = None  # [[path, size, mtime_ns, sha256], ...]
    endpoint: str | None = None  # "provider@host" of the success


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One HTTP attempt.

    `number`: leave None and the ledger numbers the task's attempts 1, 2, 3… across
    every run; a number given is stored as is. `started_at`: a datetime, or a float
    Unix time (time.time()); read back as a UTC datetime.
    """

    task_id: str
    run_id: int
    started_at: datetime | float
    outcome: Outcome | str
    number: int | None = None
    latency_s: float | None = None
    status: int | None = None  # HTTP status; None when no answer came
    error_type: str | None = None
    error_code: str | None = None
    message: str | None = None
    request_id: str | None = None


def task_record(row: tuple[Any, ...]) -> TaskRecord:
    (id_, fp, state, terminal, reason, etype, ecode, attempts, outputs, sidecar, model,
     prompt, cost, usage, request_id, run_id, updated_at, first_input) = row
    return TaskRecord(
        # Cleaned on the way out too: a ledger written before the rule may hold anything.
        id=id_, fingerprint=fp, state=State(state), terminal=bool(terminal),
        reason=clean_or_none(reason),
        error_type=etype, error_code=ecode, attempts=attempts,
        outputs=[Path(p) for p in json.loads(outputs)],
        sidecar=Path(sidecar) if sidecar else None, model=model, prompt=prompt, cost=cost,
        usage=json.loads(usage) if usage else None, request_id=request_id, run_id=run_id,
        updated_at=datetime.fromisoformat(updated_at),
        first_input=Path(first_input) if first_input else None,
    )
