"""Batch mode: tasks go to the provider's Batch API at half price, and come back later.

Submitting: the lines are written to JSONL files (split at the provider's
limits); for each file the intent — a client token and the file's tasks, now
`batched` — is committed to the ledger BEFORE the file is uploaded and the
batch created (with the token in its metadata). A run killed anywhere in
between leaves a `submitting` row; the next run lists the provider's batches,
finds the one carrying the token and records it, or, when there is none,
puts the tasks back to send. A batch is never created twice for one task.

Polling (every run and `status`, before anything else): each open batch is
retrieved; once it has ended, collecting.py keeps its lines. `--wait` polls
until every batch of this gateway has ended. A batch lives on the gateway that
created it: a run against another base URL leaves it alone, and the
in-process simulator's batches (marked so) are given up by the next run.

It never sends a live request (the scheduler does) and never decides which
tasks run (the plan does): it is handed the tasks the plan chose.
"""

from __future__ import annotations

import secrets
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from pipeline.config.models import Models
from pipeline.config.settings import Provider, Settings
from pipeline.errors import RequestError, RunAborted, StatusError
from pipeline.gateway import retry
from pipeline.gateway.routes.batch import (
    TOKEN_KEY,
    BatchAPI,
    InputFiles,
    scratch_folder,
)
from pipeline.ledger.batches import ENDED, Batches, BatchRow
from pipeline.ledger.store import Ledger
from pipeline.run.batchmode import estimator, takes
from pipeline.run.collecting import Collector, Outcome
from pipeline.task import State, Task

POLL_SECONDS = 30.0  # at most between polls of open batches under --wait
IN_PROCESS = "in-process simulator "  # the endpoint's prefix for its batches
LOOK_BACK = 600  # seconds of clock skew allowed when looking for a batch by its token


class Batcher:
    """One run's batch mode: which tasks batch, at what price; polling, submitting, waiting.
    Also the run's ledger row for what it collects (`run_id`)."""

    def __init__(self, *, models: Models, provider: Provider, settings: Settings,
                 ledger: Ledger, price: Callable[[Task, Mapping[str, Any] | None], float],
                 tasks: Callable[[], Iterable[Task]], run_id: int, spool: Path,
                 wait: bool = False, quiet: bool = False):
        self.models, self.provider, self.settings = models, provider, settings
        self.ledger, self.book = ledger, Batches(ledger)
        self.quiet = quiet
        # The in-process simulator ends with this process, and its batches with it.
        self.wait = wait or (settings.batch and provider.base_url is None)
        self.outcome = Outcome()
        self.run_id = run_id
        self.collector = Collector(ledger=ledger, price=price, tasks=tasks,
                                   outcome=self.outcome, run_id=run_id, say=self._say,
                                   endpoint=provider.endpoint, spool=spool)
        self.after_plan = False  # tasks put back to send now wait for the next run
        self.back_before_plan = 0
        self._shown: dict[str, str] = {}  # token -> the progress line last printed
        self._estimate = estimator(models, provider, settings)

    # -- which tasks, at what price --

    def takes(self, task: Task) -> bool:
        return takes(task, self.models, self.provider, self.settings)

    def estimate(self, task: Task) -> float:
        return self._estimate(task)

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
        """A note for the summary and stderr; the key masked, should a gateway echo it."""
        if self.provider.api_key:
            text = text.replace(self.provider.api_key.reveal(), "***")
        if self.outcome.note(text) and not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def summary(self) -> dict[str, Any] | None:
        """The summary's `batch` part; None when batch mode played no part in this run."""
        o = self.outcome
        if not (self.settings.batch or o.collected or o.back_to_send or o.notes):
            return None
        return o.as_dict(self.collector.kept, self.waiting())

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

    def connect(self, session: aiohttp.ClientSession, provider: Provider) -> BatchAPI:
        """The Batch API of `provider` (its base URL known: the simulator has started)."""
        return BatchAPI(session, provider, self.settings.timeout, self.models)

    async def _collect_in_session(self) -> None:
        async with aiohttp.ClientSession() as session:
            await self.collect(BatchAPI(session, self.provider, self.settings.timeout,
                                        self.models))

    async def collect(self, api: BatchAPI, *, wait: bool = False) -> None:
        """Poll every open batch once (until all have ended, when `wait`: after the plan)."""
        if wait and not self.after_plan:
            self.after_plan, self.back_before_plan = True, self.outcome.back_to_send
        every = 0.5  # seconds to the next poll: doubling up to POLL_SECONDS, so a batch that
        while True:  # ends in seconds (a rehearsal) is not waited on for minutes
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
            if not wait or not self._awaited(api):
                return
            if not self.quiet:
                self._progress(self._endpoint(api))
            await anyio.sleep(max(0.05, every * retry.wait_scale()))
            every = min(POLL_SECONDS, every * 2)

    def _awaited(self, api: BatchAPI) -> list[BatchRow]:
        """The open batches --wait waits for: this gateway's, except one this run could not
        tell was created (the next run looks for it)."""
        return [r for r in self.open_rows() if r.endpoint == self._endpoint(api)
                and not (r.id is None and r.run_id == self.run_id)]

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
            if row.run_id != self.run_id:  # this run's own creation may still be under way
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
            await self.collector.collect(api, row.token, info)

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
            await self.collector.collect(api, row.token, found)

    # -- submitting --

    async def submit(self, api: BatchAPI, work: Iterable[tuple[Task, str]]) -> None:
        """Lines to files, then per file: intent, upload, create, record."""
        uploaded: dict[Path, str] = {}

        async def upload_image(path: Path) -> str:
            if path not in uploaded:
                uploaded[path] = await api.upload(path, "vision")
            return uploaded[path]

        with scratch_folder() as folder:
            files = InputFiles(Path(folder), upload_image)
            for task, fp in work:
                try:
                    await files.add(task, fp)
                # An image upload failed, a line alone is over a file's size, or an input
                # is gone since the check pass (OSError): the task waits for the next run.
                except (RequestError, ValueError, OSError) as exc:
                    if isinstance(exc, RequestError) and (
                            retry.classify(exc) is retry.Verdict.FATAL):
                        raise RunAborted(f"the provider refused an upload: {exc}") from exc
                    self._say(f"task {task.id}: not submitted ({exc}); the next run tries "
                              "again")
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

