"""Fan tasks out to the gateway: `feed` fills a bounded queue, N workers drain it.

Each worker takes one task at a time through its attempts (retry.py decides,
limits.py paces), writes the outputs (writer.py) and records every attempt
and outcome in the ledger. A task's failure is a ledger record, never an
exception in the task group: only bugs escape. After a fatal answer, a
spent budget or a shutdown request no new request starts.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from pipeline.config.settings import Settings
from pipeline.errors import BadResponse, OutcomeUnknown, RequestError, StatusError
from pipeline.gateway import retry
from pipeline.gateway.classify import what_stops
from pipeline.gateway.client import Answer, Gateway
from pipeline.gateway.limits import AdaptiveConcurrency, Slot, Throttle
from pipeline.ledger.fingerprint import idempotency_key
from pipeline.ledger.store import Attempt, Ledger
from pipeline.run import outcomes
from pipeline.run.board import Board, ModelStopped
from pipeline.run.commits import GroupCommit
from pipeline.run.diskwriter import DiskWriter
from pipeline.run.feed import feed
from pipeline.run.gil import loop_first
from pipeline.run.outcomes import cause, without_frames
from pipeline.run.redo import keep_rejected
from pipeline.run.spool import kept_or_lost
from pipeline.run.writer import Result, result_of, write_result
from pipeline.task import Task
from pipeline.views.logs import event
from pipeline.views.tally import Tally

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState


class Stopped(Exception):
    """No new request may start: the run was aborted, interrupted or hit its budget."""


@dataclass
class Stop:
    """Why launching stopped, if it did. The first reason wins."""

    reason: str | None = None
    fatal: StatusError | RequestError | None = None
    stopped: anyio.Event = field(default_factory=anyio.Event)

    def __bool__(self) -> bool:
        return self.reason is not None

    def set(self, reason: str, fatal: RequestError | None = None) -> None:
        if self.reason is None:
            self.reason, self.fatal = reason, fatal
            self.stopped.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when launching stops: a task waiting to retry must not
        hold a shutdown for its backoff (or the whole grace) when nothing is in flight."""
        with anyio.move_on_after(seconds):
            await self.stopped.wait()


@dataclass
class Departure:
    """When an attempt's request left: the throttle's clock, the wall clock, monotonic."""

    at: float | None = None  # None: it never left (stopped, or cancelled before its turn)
    wall: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(
        self,
        gateway: Gateway,
        ledger: Ledger,
        settings: Settings,
        run_id: int,
        tally: Tally,
        *,
        price: Callable[[Task, Mapping[str, Any] | None], float],
        throttle: Throttle | None = None,
        key_salt: str = "",
        endpoint: str | None = None,
        spool: Path | None = None,
        board: Board | None = None,
        keep_aside: Mapping[str, list[Path]] | None = None,
    ):
        self.gateway = gateway
        self.ledger = ledger
        self.settings = settings
        self.run_id = run_id
        self.tally = tally
        self.price = price
        self.throttle = throttle or Throttle()
        self.concurrency = AdaptiveConcurrency(settings.concurrency)
        self.stop = Stop()
        self.board = board or Board()  # each model's route this run, and stopped models
        # --force asks for new work: a fresh Idempotency-Key, or a gateway that honours
        # keys would hand back the old answer. Without it, a re-sent `unknown` task keeps
        # its key, so such a gateway can return what it already billed.
        self.key_salt = key_salt
        self.endpoint = endpoint  # "provider@host": recorded with each result
        self.spool = spool  # where a paid answer waits when its folder refuses it
        # --redo-rejected: task id → its rejected files, renamed aside before the new write.
        self.keep_aside = keep_aside or {}
        # Up to a few writer threads: enough to overlap slow fsyncs, few enough not to
        # fight the event loop for the GIL (40 threads made every call on the loop slower).
        self.disk = DiskWriter(most=4)
        self.commits = GroupCommit(ledger.flush)
        # Tasks an earlier run may have been billed for (left `unknown`, or failed on a paid
        # but unusable answer): a paid answer for one now may be a second charge.
        self.billed_before: set[str] = set()

    async def run(self, work: Iterable[tuple[Task, str]]) -> None:
        """Process (task, fingerprint) pairs until done or stopped."""
        send, receive = anyio.create_memory_object_stream[tuple[Task, str]](
            self.settings.concurrency * 2)
        with loop_first():
            async with self.disk, anyio.create_task_group() as group:
                eager = functools.partial(self.throttle.unpaced, 2 * self.settings.concurrency)
                group.start_soon(feed, work, send, lambda: bool(self.stop), eager)
                # Twice as many workers as requests allowed in flight: while some check and
                # save their answers, others keep every slot on the wire busy.
                for _ in range(self.settings.concurrency * 2):
                    group.start_soon(self._work, receive.clone())
                receive.close()

    async def _work(self, receive: anyio.abc.ObjectReceiveStream[tuple[Task, str]]) -> None:
        async with receive:
            async for task, fingerprint in receive:
                if self.stop:
                    continue  # drain, so the producer is never stuck on a full queue
                await self._process(task, fingerprint)

    async def _process(self, task: Task, fingerprint: str) -> None:
        key = idempotency_key(task.id, fingerprint + self.key_salt)
        failed: list[RequestError] = []  # each failed attempt's error, oldest first
        send = functools.partial(self.board.send, task.model, task.route, functools.partial(
            self._attempt, task, fingerprint, key, failed))
        try:
            answer = await retry.attempts(send, self.settings.task_deadline,
                                          functools.partial(self._policy, task))
        except RequestError as exc:
            self._record_failure(task, fingerprint, exc)
            return
        except ModelStopped as exc:
            self._not_retried(task, fingerprint, failed, exc)
            return
        except Stopped:
            self._not_retried(task, fingerprint, failed)
            return
        except anyio.get_cancelled_exc_class():
            self._not_retried(task, fingerprint, failed)  # the grace ran out
            raise
        # A paid answer is in hand: a cancel must not cut its saving short.
        with anyio.CancelScope(shield=True):
            await self._save(task, fingerprint, answer, len(failed) + 1)

    def _policy(self, task: Task, deadline: float) -> AsyncRetrying:
        return retry.policy(
            retries=self.settings.retries, deadline=deadline,
            retry_unknown=self.settings.retry_unknown,
            before_sleep=functools.partial(self._before_sleep, task), sleep=self.stop.sleep)

    def _before_sleep(self, task: Task, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        why = cause(exc)
        self.tally.retries_by_cause[why] += 1
        self.tally.retrying += 1
        wait = state.next_action.sleep if state.next_action else 0
        event(logging.INFO, "task retry", id=task.id, attempt=state.attempt_number,
              cause=why, wait_s=round(wait, 2), error=str(exc))

    async def _gate(self) -> float:
        """Wait for the server's cooldown and the pacer's turn, and return the departure
        time; refuse if stopping, also when launching stops during the cooldown."""
        cooldown = self.throttle.cooldown
        while not self.stop and (left := cooldown.remaining()) > 0:
            await self.stop.sleep(left)
        if self.stop:
            raise Stopped
        departed = await self.throttle.turn()
        if self.stop:
            raise Stopped
        return departed

    async def _depart(self, task: Task, fingerprint: str, number: int, slot: Slot,
                      departure: Departure) -> None:
        """Called by the gateway with the body built, right before the request is written
        (ModelStopped when the task's model stopped meanwhile): a place on the wire, the
        pacer's turn, the `submitted` row committed."""
        self.board.check(task.model)
        await slot.take()
        departed = await self._gate()
        self.board.check(task.model)
        if number == 1:
            self.ledger.mark_submitted(self.run_id, task, fingerprint, commit=False)
            await self.commits.committed()  # with the others leaving in this turn
        self.throttle.left()  # the pace is kept from here, not from the turn
        self.tally.in_flight += 1
        self.tally.sent()
        departure.at, departure.wall, departure.started = departed, time.time(), time.monotonic()

    async def _attempt(self, task: Task, fingerprint: str, key: str,
                       failed: list[RequestError], route: str) -> Answer:
        """One attempt; a failed one's error is appended to `failed` (one per attempt)."""
        number = len(failed) + 1
        if number > 1:
            self.tally.retrying -= 1  # its wait is over, whatever happens next
        slot = self.concurrency.slot()  # taken with the body built, given back once answered
        departure = Departure()
        ready = functools.partial(self._depart, task, fingerprint, number, slot, departure)
        try:
            answer = await self.gateway.edit(task, key, route, ready=ready,
                                             answered=slot.give_back)
        except RequestError as exc:
            self._on_paid_unusable(task, exc, failed)
            self._count_billed(task, exc, failed)
            self._on_error(task, exc, number, departure)
            failed.append(without_frames(exc))
            raise
        except anyio.get_cancelled_exc_class():
            if departure.at is not None:
                # Shutdown's grace ran out with this request on the wire: maybe billed.
                cancelled = self._on_cancel(task, number, departure.wall)
                self._count_billed(task, cancelled, failed)
                failed.append(cancelled)
            raise
        finally:
            slot.give_back()
            if departure.at is not None:
                self.tally.in_flight -= 1
        assert departure.at is not None  # an answer came, so the request went
        self._count_billed(task, None, failed)
        self.concurrency.on_success()
        self.throttle.on_success(departure.at)
        self.ledger.record_attempt(Attempt(
            task_id=task.id, run_id=self.run_id, number=number, started_at=departure.wall,
            latency_s=time.monotonic() - departure.started, status=200, error_type=None,
            error_code=None, message=None, request_id=answer.request_id, outcome="succeeded"))
        return answer

    def _count_billed(self, task: Task, exc: RequestError | None,
                      failed: list[RequestError]) -> None:
        """An answer that may be billed (a 200, usable or not, or none after the upload)
        after another that may have been: one possible double charge. Counted where the
        second charge happens, so it equals what the gateway billed twice."""
        if exc is not None and not retry.may_be_billed(exc):
            return
        if task.id in self.billed_before or any(retry.may_be_billed(e) for e in failed):
            self.tally.possible_double_charges += 1

    def _on_paid_unusable(self, task: Task, exc: RequestError,
                          failed: list[RequestError]) -> None:
        """A 200 we cannot use was likely billed: it counts in the spend, and the task gets
        one more try after it, not the full retry budget."""
        if not (isinstance(exc, BadResponse) and exc.status == 200):
            return
        exc.repeated = any(isinstance(e, BadResponse) and e.status == 200 for e in failed)
        cost = self.price(task, exc.usage)
        self.tally.spent += cost
        self.ledger.add_spend(self.run_id, cost)
        self._check_budget()

    def _check_budget(self) -> None:
        max_cost = self.settings.max_cost
        if max_cost is not None and self.tally.spent >= max_cost:
            self.stop.set(f"the budget of {max_cost:g} is spent")

    def _on_error(self, task: Task, exc: RequestError, number: int,
                  departure: Departure) -> None:
        verdict = retry.classify(exc)
        if retry.is_overload(exc) and departure.at is not None:
            wait = exc.retry_after if isinstance(exc, StatusError) else None
            scaled = None if wait is None else wait * retry.wait_scale()
            if getattr(exc, "status", None) == 429:  # too many requests: slow the pace
                self.throttle.on_limited(departure.at, scaled)
            else:  # the upstream is overloaded: fewer in flight
                self.concurrency.on_overload()
                if scaled is not None:
                    self.throttle.cooldown.extend(scaled)
        if verdict is retry.Verdict.FATAL:
            self.stop.set(f"the gateway refused the run: {exc}", exc)
            event(logging.ERROR, "run aborted", id=task.id, error=str(exc))
        outcome = {"retry": "retry", "unknown": "unknown", "terminal": "failed",
                   "model": "failed", "route": "failed",
                   "fatal": "aborted"}[verdict.value]
        self.ledger.record_attempt(Attempt(
            task_id=task.id, run_id=self.run_id, number=number, started_at=departure.wall,
            latency_s=time.monotonic() - departure.started,
            status=getattr(exc, "status", None), error_type=cause(exc),
            error_code=getattr(exc, "code", None), message=str(exc)[:500],
            request_id=getattr(exc, "request_id", None), outcome=outcome))

    def _on_cancel(self, task: Task, number: int, started_wall: float) -> OutcomeUnknown:
        reason = "cancelled at shutdown with the request in flight; it may have been billed"
        self.ledger.record_attempt(Attempt(
            task_id=task.id, run_id=self.run_id, number=number, started_at=started_wall,
            latency_s=time.time() - started_wall, status=None, error_type="cancelled",
            error_code=None, message=reason, request_id=None, outcome="unknown"))
        return OutcomeUnknown(reason)

    def _not_retried(self, task: Task, fingerprint: str, failed: list[RequestError],
                     stopped: ModelStopped | None = None) -> None:
        """Launching (or the task's model) stopped before the task's next attempt: it keeps
        what its last attempt came to (maybe billed: `unknown`). One never sent stays as it
        was for the next run, unless its model stopped: failed (not terminal), with why."""
        if not failed and stopped is None:
            return
        why = str(stopped) if stopped else f"not retried: {self.stop.reason or 'cancelled'}"
        last = failed[-1] if failed else None
        outcomes.mark(self.ledger, self.tally, task, fingerprint, last,
                      f"{last} ({why})" if last else why, terminal=False)

    def _record_failure(self, task: Task, fingerprint: str, exc: RequestError) -> None:
        verdict, stops, reason = retry.classify(exc), what_stops(exc), str(exc)
        if stops == "model":
            self.board.stop(task.model, reason)
        elif stops == "run":
            self.stop.set(f"the gateway refused the run: {exc}", exc)
            event(logging.ERROR, "run aborted", id=task.id, error=reason)
        # When the gateway stops a model or the run, the task is not at fault: a later
        # run sends it again (not terminal).
        terminal = stops is None and verdict in (retry.Verdict.TERMINAL, retry.Verdict.ROUTE)
        outcomes.mark(self.ledger, self.tally, task, fingerprint, exc, reason, terminal=terminal)
        label = {"unknown": "task unknown", "fatal": "task aborted"}.get(verdict, "task failed")
        event(logging.WARNING, label, id=task.id, terminal=terminal, error=reason,
              code=getattr(exc, "code", None))

    async def _save(self, task: Task, fingerprint: str, answer: Answer, attempts: int) -> None:
        cost = self.price(task, answer.usage)
        record: dict[str, Any] = {
            "task_id": task.id, "fingerprint": fingerprint, "model": task.model,
            "route": answer.route,
            "prompt": task.prompt, "request": dict(task.fields),
            "inputs": [str(p) for p in task.images],
            "mask": str(task.mask) if task.mask else None,
            "usage": answer.usage, "revised_prompt": answer.revised_prompt,
            "request_id": answer.request_id, "attempts": attempts, "cost": cost,
            "finished_at": time.time(), "endpoint": self.endpoint,
        }
        if answer.notes:
            record["notes"] = list(answer.notes)
        result = result_of(task, fingerprint, answer.images, answer.formats, record)

        def write() -> list[Any]:
            if task.id in self.keep_aside:
                keep_rejected(self.keep_aside[task.id])
            return write_result(result)

        try:
            # Disk writes (with fsync) go to a thread so the event loop keeps sending.
            written = await self.disk.run(write)
        except OSError as exc:
            self._not_written(task, fingerprint, result, exc, record)
            return
        outputs = result.outputs
        self.ledger.mark_succeeded(task.id, fingerprint, outputs, result.sidecar,
                                   usage=answer.usage, cost=cost, request_id=answer.request_id,
                                   written=written, endpoint=self.endpoint)
        event(logging.INFO, "task succeeded", id=task.id, attempts=attempts,
              outputs=",".join(str(p) for p in outputs), cost=round(cost, 4))
        self.tally.succeeded += 1
        self.tally.wrote([str(p) for p in outputs])
        self.tally.spent += cost
        self._check_budget()

    def _not_written(self, task: Task, fingerprint: str, result: Result,
                     exc: OSError, record: dict[str, Any]) -> None:
        """A paid answer its folder refused: kept in the spool, launching stops."""
        where = result.outputs[0].parent
        reason = kept_or_lost(self.spool, result, exc, record) if self.spool else str(exc)
        self.ledger.mark_failed(task.id, fingerprint, terminal=False, reason=reason,
                                error_type="not_written", error_code=errno.errorcode.get(
                                    exc.errno or 0))
        self.ledger.flush()
        self.tally.failed += 1
        self.tally.spent += record["cost"]
        self.tally.failure(task.id, reason)
        event(logging.ERROR, "task not written", id=task.id, error=reason)
        self.stop.set(f"cannot write to {where} ({exc.strerror or exc}); paid results are kept"
                      " beside the ledger and the next run writes them without a new request")

