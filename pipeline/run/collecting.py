"""Collecting one ended batch: its output and error lines, matched to the tasks waiting in it.

Output lines (in any order) are matched by custom_id and kept like live answers
(saving.py: outputs, sidecar, ledger, spend at the batch price); error lines
are failures classified as live errors are (retry.py); tasks the batch never
ran (expired, cancelled) go back to send; a completed batch without a line for
a task leaves it `unknown` (it may have been billed). A line for a task not
waiting in the batch — one kept before a crash, or an unknown custom_id — is
skipped and counted, so no output is written twice and no stranger is trusted.

It never polls or creates batches (batch.py does) and never sends a request.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from pipeline.errors import BadResponse, RequestError
from pipeline.gateway import retry
from pipeline.gateway.routes.batch import (
    BatchAPI,
    LineResult,
    decode_answer,
    read_line,
    split_custom_id,
)
from pipeline.ledger.batches import Batches
from pipeline.ledger.plan import adopt_if_on_disk
from pipeline.ledger.store import Attempt, Ledger
from pipeline.run.batchmode import PRICE_FACTOR
from pipeline.run.saving import save_answer
from pipeline.task import Task
from pipeline.views.logs import event
from pipeline.views.tally import Tally


@dataclass
class Outcome:
    """What batch mode did in this run, for the summary."""

    batches_created: int = 0
    batched: int = 0
    collected: Counter[str] = field(default_factory=Counter)  # succeeded, failed, ...
    back_to_send: int = 0
    saved: float = 0.0
    notes: list[str] = field(default_factory=list)
    notes_left_out: int = 0

    MAX_NOTES = 50  # 50,000 tasks that each could not be submitted make one count, not a book

    def note(self, text: str) -> bool:
        """Keep a note; False when there are enough already (it is only counted)."""
        if len(self.notes) >= self.MAX_NOTES:
            self.notes_left_out += 1
            return False
        self.notes.append(text)
        return True

    def as_dict(self, kept: Tally, waiting: int) -> dict[str, Any]:
        return {"batches_created": self.batches_created, "batched": self.batched,
                "collected": dict(self.collected), "back_to_send": self.back_to_send,
                "spent": round(kept.spent, 4), "saved": round(self.saved, 4),
                "waiting": waiting, "outputs": kept.outputs, "notes": self.notes,
                "notes_left_out": self.notes_left_out}


KEEPERS = 8  # answers decoded and written at once: memory for 8, fsyncs of 4 overlapping


class Collector:
    def __init__(self, *, ledger: Ledger,
                 price: Callable[[Task, Mapping[str, Any] | None], float],
                 tasks: Callable[[], Iterable[Task]], outcome: Outcome, run_id: int,
                 say: Callable[[str], None], endpoint: str, spool: Path):
        self.ledger, self.book = ledger, Batches(ledger)
        self.price, self.tasks = price, tasks
        self.outcome, self.run_id, self._say = outcome, run_id, say
        self.endpoint, self.spool = endpoint, spool  # who answered; where refused files wait
        self.kept = Tally()  # answers kept from batches (saving.py counts into it)
        self.disk = anyio.CapacityLimiter(4)
        self.slots = anyio.Semaphore(KEEPERS)

    async def collect(self, api: BatchAPI, token: str, info: dict[str, Any]) -> None:
        """Keep every line of an ended batch; what it never ran goes back to send."""
        waiting, members = self.book.waiting(token), self.book.members(token)
        tasks = {t.id: t for t in self.tasks() if t.id in waiting}
        lines, before = Counter[str](), Counter(self.outcome.collected)
        async with anyio.create_task_group() as keeping:
            for file_id in (info.get("output_file_id"), info.get("error_file_id")):
                if file_id:
                    async for raw in api.lines(file_id):
                        lines[await self._line(api, keeping, raw, info["id"], waiting,
                                               members, tasks)] += 1
        if lines["kept before"]:
            self._say(f"batch {info['id']}: {lines['kept before']} line(s) already kept by a "
                      "run that stopped while collecting: skipped")
        if lines["unknown"]:
            self._say(f"batch {info['id']}: {lines['unknown']} line(s) for no task of this "
                      "batch (unknown custom_id, or unreadable): skipped")
        left = self.book.waiting(token)
        if info["status"] == "completed":  # every line should have come: those missing may
            for task_id, fp in left.items():  # have been billed
                self.ledger.mark_unknown(task_id, fp, reason=f"batch {info['id']} completed "
                                         "without a line for this task")
                self.outcome.collected["unknown"] += 1
        elif left:
            back = self.book.unbatch(token, f"batch {info['id']} {info['status']} before "
                                     f"running it{_first_error(info)}; sending again")
            self.outcome.back_to_send += back
        self.book.collected(token)
        c = self.outcome.collected - before
        self._say(f"collected batch {info['id']} ({info['status']}): {c['succeeded']} "
                  f"succeeded, {c['failed']} failed, {c['unknown']} unknown, "
                  f"{len(left)} not run")

    async def _line(self, api: BatchAPI, keeping: anyio.abc.TaskGroup, raw: bytes,
                    batch_id: str, waiting: dict[str, str], members: dict[str, str],
                    tasks: dict[str, Task]) -> str:
        """Keep one line's result; say what the line was: "kept", "kept before" (a task of
        this batch no longer waiting) or "unknown" (no task of this batch, or unreadable)."""
        result = read_line(raw)
        ids = split_custom_id(result.custom_id) if result else None
        if result is None or ids is None or members.get(ids[0]) != ids[1]:
            return "unknown"
        if waiting.get(ids[0]) != ids[1]:
            return "kept before"
        task_id, fp = ids
        del waiting[task_id]  # a second line for it is skipped
        task = tasks.get(task_id)
        if task is None:
            self._fail(task_id, fp, batch_id, RequestError(
                f"the task left the manifest before batch {batch_id} answered it"), result)
        elif result.status == 200:
            await self.slots.acquire()  # a few answers at once: their fsyncs overlap
            keeping.start_soon(self._keep_one, api, task, fp, batch_id, result)
        elif result.error is not None:
            self._fail(task_id, fp, batch_id, result.error, result)
        else:  # never ran (batch_expired, cancelled): back to send
            self.book.back_to_send(task_id, fp, f"batch {batch_id}: {result.code}: "
                                   f"{result.message}; sending again")
            self.outcome.back_to_send += 1
        return "kept"

    async def _keep_one(self, api: BatchAPI, task: Task, fp: str, batch_id: str,
                        result: LineResult) -> None:
        try:
            with anyio.CancelScope(shield=True):  # a paid answer is kept whole, or not begun
                await self._keep(api, task, fp, batch_id, result)
        finally:
            self.slots.release()

    async def _keep(self, api: BatchAPI, task: Task, fp: str, batch_id: str,
                    result: LineResult) -> None:
        assert result.body is not None
        # Kept by a run killed between writing the files and recording the success.
        if adopt_if_on_disk(task, fp, self.ledger, self.endpoint):
            self.outcome.collected["found on disk"] += 1
            return
        try:
            answer = await decode_answer(api.gateway, task, result.body, result.request_id)
        except BadResponse as exc:
            self._paid_unusable(task, exc)
            self._fail(task.id, fp, batch_id, exc, result)
            return
        live = self.price(task, answer.usage)
        cost = live * PRICE_FACTOR
        self._attempt(task.id, result, "succeeded", None)
        kept = await save_answer(
            task, fp, answer, attempts=1, cost=cost, ledger=self.ledger, tally=self.kept,
            endpoint=self.endpoint, spool=self.spool,
            disk=functools.partial(anyio.to_thread.run_sync, limiter=self.disk),
            extra={"batch": batch_id, "price": "batch"})
        if kept is None:  # its folder refused it: kept in the spool, the task failed
            self.outcome.collected["not written"] += 1
            return
        # Committed now, not with the ledger's next batch of writes: a collection can wait a
        # long while on the provider's next line, and `status` beside it should see these.
        self.ledger.flush()
        self.outcome.collected["succeeded"] += 1
        self.outcome.saved += live - cost

    def _paid_unusable(self, task: Task, exc: BadResponse) -> None:
        """A 200 we cannot use was billed, as live (scheduler.py): it counts in the spend at
        the batch price; after a second one in a row the task is not sent again."""
        before = self.ledger.attempts(task.id)
        exc.repeated = bool(before) and before[-1].error_type == BadResponse.kind
        cost = self.price(task, exc.usage) * PRICE_FACTOR
        self.kept.spent += cost
        self.ledger.add_spend(self.run_id, cost)

    def _fail(self, task_id: str, fp: str, batch_id: str, exc: RequestError,
              result: LineResult) -> None:
        """Classified as a live error is: terminal, worth another try, or maybe billed."""
        verdict = retry.classify(exc)
        reason = f"batch {batch_id}: {exc}"
        if verdict is retry.Verdict.UNKNOWN:
            self.ledger.mark_unknown(task_id, fp, reason=reason)
            self.outcome.collected["unknown"] += 1
        else:
            self.ledger.mark_failed(
                task_id, fp, terminal=verdict is retry.Verdict.TERMINAL, reason=reason,
                error_type=getattr(exc, "code", None) or exc.kind,
                error_code=getattr(exc, "code", None))
            self.outcome.collected["failed"] += 1
        self._attempt(task_id, result, "failed" if verdict is not retry.Verdict.UNKNOWN
                      else "unknown", exc)
        self.kept.failure(task_id, reason)
        event(logging.WARNING, "task failed", id=task_id, batch=batch_id, error=str(exc))

    def _attempt(self, task_id: str, result: LineResult, outcome: str,
                 exc: RequestError | None) -> None:
        self.ledger.record_attempt(Attempt(
            task_id=task_id, run_id=self.run_id, started_at=time.time(), outcome=outcome,
            status=result.status, error_type=exc.kind if exc else None,
            error_code=getattr(exc, "code", None), message=str(exc)[:500] if exc else None,
            request_id=result.request_id))


def _first_error(info: dict[str, Any]) -> str:
    """A failed batch's first validation error, as the provider gave it (bounded)."""
    errors = info.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    return f" ({str(first.get('message'))[:200]})" if first else ""
