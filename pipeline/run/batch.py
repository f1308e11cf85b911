"""Batch mode: tasks go to the provider's Batch API at half price, and come back later.

Submitting: the lines are written to JSONL files (split at the provider's
limits); for each file the intent — a client token and the file's tasks, now
`batched` — is committed to the ledger BEFORE the file is uploaded and the
batch created (with the token in its metadata). A run killed anywhere in
between leaves a `submitting` row; the next run lists the provider's batches,
finds the one carrying the token and records it, or, when there is none,
puts the tasks back to send. A batch is never created twice for one task.

Collecting (every run and `status`, before anything else): each open batch is
retrieved; once it has ended, its output lines are matched by custom_id (in
any order) and kept like live answers (saving.py: outputs, sidecar, ledger,
spend at the batch price); its error lines are failures classified like live
errors; tasks a batch never ran (expired, cancelled) go back to send. A line
for a task that is not waiting in that batch — unknown, or already kept
before a crash — is skipped, so no output is written twice.

It never sends a live request (the scheduler does) and never decides which
tasks run (the plan does): it is handed the tasks the plan chose.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from pipeline.config.models import Models
from pipeline.config.settings import Provider, Settings
from pipeline.errors import BadResponse, RequestError, RunAborted, StatusError
from pipeline.gateway import retry
from pipeline.gateway.client import Answer, Gateway
from pipeline.gateway.routes.batch import (
    PRICE_FACTOR,
    TOKEN_KEY,
    BatchAPI,
    InputFiles,
    LineResult,
    decode_answer,
    read_line,
    scratch_folder,
    split_custom_id,
)
from pipeline.ledger.batches import ENDED, Batches, BatchRow
from pipeline.ledger.store import Attempt, Ledger
from pipeline.run.saving import save_answer
from pipeline.task import State, Task
from pipeline.views.logs import event
from pipeline.views.tally import Tally

POLL_SECONDS = 30.0  # between polls of open batches under --wait
IN_PROCESS = "in-process simulator "  # the endpoint's prefix for its batches
LOOK_BACK = 600  # seconds of clock skew allowed when looking for a batch by its token


@dataclass
class Outcome:
    """What batch mode did in this run, for the summary."""

    batches_created: int = 0
    batched: int = 0
    collected: Counter[str] = field(default_factory=Counter)  # succeeded, failed, ...
    back_to_send: int = 0
    saved: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self, kept: Tally, waiting: int) -> dict[str, Any]:
        return {"batches_created": self.batches_created, "batched": self.batched,
                "collected": dict(self.collected), "back_to_send": self.back_to_send,
                "spent": round(kept.spent, 4), "saved": round(self.saved, 4),
                "waiting": waiting, "outputs": kept.outputs, "notes": self.notes}


def takes(task: Task, models: Models, provider: Provider, settings: Settings) -> bool:
    """Does this task go into a batch: batch mode on, and both provider and model can?"""
    spec = models.get(task.model)
    return settings.batch and provider.batch and bool(spec and spec.batch)


def estimator(models: Models, provider: Provider,
              settings: Settings) -> Callable[[Task], float]:
    """A task's estimated price: half the list price when it goes into a batch."""
    def estimate(task: Task) -> float:
        factor = PRICE_FACTOR if takes(task, models, provider, settings) else 1.0
        return models.estimate(task) * factor

    return estimate


class Batcher:
    def __init__(self, *, models: Models, provider: Provider, settings: Settings,
                 ledger: Ledger, price: Callable[[Task, Answer], float],
                 tasks: Callable[[], Iterable[Task]], run_id: int, wait: bool = False,
                 quiet: bool = False):
        self.models, self.provider, self.settings = models, provider, settings
        self.ledger, self.book = ledger, Batches(ledger)
        self.price, self.tasks = price, tasks
        self.quiet = quiet
        # The in-process simulator ends with this process, and its batches with it.
        self.wait = wait or (settings.batch and provider.base_url is None)
        self.kept = Tally()  # answers kept from batches (saving.py counts into it)
        self.outcome = Outcome()
        self.run_id = run_id
        self.after_plan = False  # tasks put back to send now wait for the next run
        self.back_before_plan = 0
        self.disk = anyio.CapacityLimiter(4)
        self._api: BatchAPI | None = None
        self._shown: dict[str, str] = {}  # token -> the progress line last printed

    # -- which tasks, at what price --

    def takes(self, task: Task) -> bool:
        return takes(task, self.models, self.provider, self.settings)

    def estimate(self, task: Task) -> float:
        return estimator(self.models, self.provider, self.settings)(task)

    def open_rows(self) -> list[BatchRow]:
        return [r for r in self.book.open() if r.provider == self.provider.name]

    def waiting(self) -> int:
        return self.ledger.counts()[State.BATCHED.value]

    @property
    def problems(self) -> int:
        """Tasks this run's batch work left failed, unknown or unsent: exit 1."""
        c = self.outcome.collected
        unsent = self.outcome.back_to_send - self.back_before_plan if self.after_plan else 0
        return c["failed"] + c["unknown"] + unsent

    def _say(self, text: str) -> None:
        self.outcome.notes.append(text)
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def summary(self) -> dict[str, Any] | None:
        """The summary's `batch` part; None when batch mode played no part in this run."""
        o = self.outcome
        if not (self.settings.batch or o.collected or o.back_to_send or o.notes):
            return None
        return o.as_dict(self.kept, self.waiting())

    # -- collecting --

    def collect_now(self) -> None:
        """Before the plan: collect what has ended (own session; nothing if nothing open)."""
        rows = self.open_rows()
        if self.provider.base_url is None:  # this run's simulator is not started yet
            for row in rows:
                if (row.endpoint or "").startswith(IN_PROCESS):  # ended with its run
                    back = self.book.abandon(row.token, "its batch was on an in-process "
                                             "simulator that ended with its run; sending again")
                    self.outcome.back_to_send += back
                else:
                    self._say(f"batch {row.id or row.token}: sent to {row.endpoint}; a run "
                              "against that gateway (--base-url or IMGEDIT_BASE_URL) collects it")
            return
        if rows:
            anyio.run(self._collect_in_session)

    async def _collect_in_session(self) -> None:
        async with aiohttp.ClientSession() as session:
            await self.collect(BatchAPI(session, self.provider, self.settings.timeout))

    async def collect(self, api: BatchAPI, *, wait: bool = False) -> None:
        """Poll every open batch once (until all have ended, when `wait`: after the plan)."""
        self._api = api
        if wait and not self.after_plan:
            self.after_plan, self.back_before_plan = True, self.outcome.back_to_send
        while True:
            for row in self.open_rows():
                try:
                    await self._poll(api, row)
                except RequestError as exc:
                    if retry.classify(exc) is retry.Verdict.FATAL:
                        raise RunAborted(f"the provider refused to show batches: {exc}") from exc
                    text = (f"batch {row.id or row.token}: cannot poll it now ({exc}); "
                            f"{'polling again' if wait else 'the next run tries again'}")
                    if self._shown.get(row.token) != text:
                        self._shown[row.token] = text
                        self._say(text)
            if not wait or not [r for r in self.open_rows() if r.endpoint == self._endpoint(api)]:
                return
            if not self.quiet:
                self._progress(self._endpoint(api))
            # The simulator's batches end in seconds; a provider's take minutes to hours.
            every = 0.5 if self.provider.simulator is not None else POLL_SECONDS
            await anyio.sleep(max(0.05, every * retry.wait_scale()))

    def _endpoint(self, api: BatchAPI) -> str:
        """Where a batch lives. The in-process simulator's batches end with their run: they
        are marked so, and no later run mistakes a standalone gateway's batch for one."""
        return f"{IN_PROCESS}{api.base}" if self.provider.base_url is None else str(api.base)

    def _progress(self, endpoint: str) -> None:
        """One line per open batch of this gateway, when it has moved since the last poll."""
        for row in self.open_rows():
            if row.endpoint != endpoint:
                continue
            text = (f"batch {row.id}: {row.status}, {row.completed + row.failed}/{row.total} "
                    f"done ({row.failed} failed)")
            if self._shown.get(row.token) != text:
                self._shown[row.token] = text
                print(text, file=sys.stderr, flush=True)

    async def wait_all(self, api: BatchAPI, signalled: list[signal.Signals]) -> None:
        """--wait: collect until every batch has ended. SIGINT/SIGTERM stop the waiting (the
        batches stay open, for the next run); an answer being kept is kept whole."""
        async with anyio.create_task_group() as group:
            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        signalled.append(signal.Signals(signum))
                        self._say(f"{signal.Signals(signum).name}: stopped waiting; the next "
                                  "run collects the batches still open")
                        group.cancel_scope.cancel()

            group.start_soon(watch)
            await self.collect(api, wait=True)
            group.cancel_scope.cancel()

    async def _poll(self, api: BatchAPI, row: BatchRow) -> None:
        if row.endpoint != self._endpoint(api):
            # Asking another gateway about it could only answer "unknown": and sending its
            # tasks again could pay for them twice. It waits for a run against its gateway.
            if row.token not in self._shown:
                self._shown[row.token] = "elsewhere"
                self._say(f"batch {row.id or row.token}: sent to {row.endpoint}, not to "
                          f"{api.base}; a run against that gateway collects it")
            return
        if row.id is None:
            await self._recover(api, row)
            return
        try:
            info = await api.retrieve(row.id)
        except StatusError as exc:
            if exc.status != 404:
                raise
            back = self.book.abandon(row.token, f"the provider no longer knows batch {row.id}; "
                                     "sending again")
            self.outcome.back_to_send += back
            self._say(f"batch {row.id}: unknown to the provider; {back} task(s) back to send")
            return
        self.book.update(row.token, info)
        if info["status"] in ENDED:
            await self._collect(api, row.token, info)

    async def _recover(self, api: BatchAPI, row: BatchRow) -> None:
        """A run stopped between recording the intent and recording the batch's id."""
        since = int(datetime.fromisoformat(row.intended_at).timestamp()) - LOOK_BACK
        found = await api.find(row.token, since)
        if found is None:
            back = self.book.abandon(row.token, "its batch was never created (the run that "
                                     "prepared it stopped first); sending again")
            self.outcome.back_to_send += back
            self._say(f"an earlier run stopped before creating its batch: {back} task(s) "
                      "back to send")
            return
        self.book.update(row.token, found)
        self._say(f"found batch {found['id']}, created by a run that stopped before "
                  "recording it")
        if found["status"] in ENDED:
            await self._collect(api, row.token, found)

    async def _collect(self, api: BatchAPI, token: str, info: dict[str, Any]) -> None:
        waiting, members = self.book.waiting(token), self.book.members(token)
        tasks = {t.id: t for t in self.tasks() if t.id in waiting}
        lines, before = Counter[str](), Counter(self.outcome.collected)
        for file_id in (info.get("output_file_id"), info.get("error_file_id")):
            if file_id:
                async for raw in api.lines(file_id):
                    lines[await self._line(raw, info["id"], waiting, members, tasks)] += 1
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

    async def _line(self, raw: bytes, batch_id: str, waiting: dict[str, str],
                    members: dict[str, str], tasks: dict[str, Task]) -> str:
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
            with anyio.CancelScope(shield=True):  # a paid answer is kept whole, or not begun
                await self._keep(task, fp, batch_id, result)
        elif result.error is not None:
            self._fail(task_id, fp, batch_id, result.error, result)
        else:  # never ran (batch_expired, cancelled): back to send
            self.book.back_to_send(task_id, fp, f"batch {batch_id}: {result.code}: "
                                   f"{result.message}; sending again")
            self.outcome.back_to_send += 1
        return "kept"

    async def _keep(self, task: Task, fp: str, batch_id: str, result: LineResult) -> None:
        assert result.body is not None
        try:
            answer = await decode_answer(self.api_gateway, result.body, result.request_id)
        except BadResponse as exc:
            self._fail(task.id, fp, batch_id, exc, result)
            return
        live = self.price(task, answer)
        cost = live * PRICE_FACTOR
        self._attempt(task.id, result, "succeeded", None)
        await save_answer(task, fp, answer, attempts=1, cost=cost, ledger=self.ledger,
                          tally=self.kept, disk=self.disk,
                          extra={"batch": batch_id, "price": "batch"})
        self.outcome.collected["succeeded"] += 1
        self.outcome.saved += live - cost

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

    @property
    def api_gateway(self) -> Gateway:
        assert self._api is not None, "collect() or submit() sets the API first"
        return self._api.gateway

    # -- submitting --

    async def submit(self, api: BatchAPI, work: Iterable[tuple[Task, str]]) -> None:
        """Lines to files, then per file: intent, upload, create, record."""
        self._api = api
        uploaded: dict[Path, str] = {}

        async def upload_image(path: Path) -> str:
            if path not in uploaded:
                uploaded[path] = await api.upload(path, "vision")
            return uploaded[path]

        with scratch_folder() as folder:
            files = InputFiles(Path(folder), upload_image)
            for task, fp in work:
                await files.add(task, fp)
            for input_file in files.files:
                await self._create(api, input_file.path, input_file.tasks)

    async def _create(self, api: BatchAPI, path: Path, tasks: list[tuple[Task, str]]) -> None:
        token = secrets.token_hex(16)
        count = self.book.intend(token, self.provider.name, self._endpoint(api), self.run_id,
                                 tasks)
        try:
            file_id = await api.upload(path, "batch")
            self.book.uploaded(token, file_id)
            info = await api.create(file_id, {TOKEN_KEY: token})
        except RequestError as exc:
            verdict = retry.classify(exc)
            if verdict is retry.Verdict.UNKNOWN:  # it may exist: the next run looks for it
                self._say(f"creating a batch of {count} task(s): no answer ({exc}); the next "
                          "run looks for it before sending anything again")
                return
            self.book.abandon(token, f"creating the batch failed: {exc}")
            if verdict is retry.Verdict.FATAL:
                raise RunAborted(f"the provider refused the batch: {exc}") from exc
            self._say(f"creating a batch of {count} task(s) failed: {exc}; they stay to send")
            return
        self.book.update(token, info)
        self.outcome.batches_created += 1
        self.outcome.batched += count
        self._say(f"batch {info['id']}: {count} task(s) submitted ({info['status']}); "
                  "`imgedit run` or `imgedit status` collects it once it has ended")


def _first_error(info: dict[str, Any]) -> str:
    """A failed batch's first validation error, as the provider gave it (bounded)."""
    errors = info.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    return f" ({str(first.get('message'))[:200]})" if first else ""
