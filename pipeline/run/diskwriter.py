"""A few long-lived threads that put answers on disk, so the event loop keeps sending.

Writing a task's outputs blocks (an fsync takes milliseconds), so it runs off
the event loop. `anyio.to_thread.run_sync` would wake a thread for every task
and wake the loop again for every result; under load those hand-offs, each a
fight for the GIL, cost the loop more than the work. Here the threads take
jobs from one queue (a busy thread takes the next job without being woken)
and finished jobs go back in batches: one wake-up of the loop for all the
results that piled up meanwhile.

It starts with one thread and adds one (up to `most`) while the jobs themselves
take more than SLOW on average: a slow disk gets its fsyncs overlapped, a quick one
is kept up with by one thread, and each thread more only takes the GIL from the
loop. Where an fsync is quick (this machine's; `make bench`'s overhead run, 6 rounds
each, alternated) four threads did 317 tasks/s and one 401 (3.39 and 2.72 ms of CPU
a task). How long jobs wait for a thread says nothing here: with the loop busy a job
waits for the GIL, and one thread's queue held jobs for 5-150 ms (median) in runs
where each job took ~1.2 ms; adding threads on such waits made the run slower.

It never decides what to write: it runs the function it is given.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]
# Seconds a job takes, on average, above which one more thread is added: a slow disk's
# fsync (tens of ms on a network disk). A quick one's took ~1.2 ms, waits for the GIL
# included (p90 4.5 ms, rarely 35).
SLOW = 0.02
WEIGHT = 0.1  # of the newest job's time in that average


class DiskWriter:
    """`async with DiskWriter(most) as disk: result = await disk.run(fn)`."""

    def __init__(self, most: int = 4, *, clock: Callable[[], float] = time.monotonic):
        self._most = most
        self._clock = clock
        self._closing = False
        self._took = 0.0  # seconds a job takes: a running average
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._wake_pending = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> DiskWriter:
        self._loop = asyncio.get_running_loop()
        self._add_thread()
        return self

    @property
    def threads(self) -> int:
        return len(self._threads)

    def _add_thread(self) -> None:
        with self._lock:  # a disk thread adds the next one; none once closing
            if self._closing or len(self._threads) >= self._most:
                return
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"imgedit-disk-{len(self._threads)}")
            thread.start()
            self._threads.append(thread)

    async def __aexit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closing = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        with anyio.CancelScope(shield=True):  # jobs still queued are finished first
            for thread in threads:
                await anyio.to_thread.run_sync(thread.join)
        self._deliver()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on a disk thread; its result, or its exception raised here."""
        assert self._loop is not None, "use DiskWriter in an `async with` block"
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, future))
        return await future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            result, error = None, None
            started = self._clock()
            try:
                result = fn()
            except BaseException as exc:  # handed back to the awaiting task as it is
                error = exc
            with self._lock:
                self._took += WEIGHT * (self._clock() - started - self._took)
                slow = self._took > SLOW
                self._done.append((future, result, error))
                wake, self._wake_pending = not self._wake_pending, True
            if slow:
                self._add_thread()  # the disk is slow: overlap its fsyncs
            if wake:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done, self._done, self._wake_pending = self._done, [], False
        for future, result, error in done:
            if future.cancelled():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
