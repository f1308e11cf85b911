"""A few long-lived threads that put answers on disk, so the event loop keeps sending.

Writing a task's outputs blocks (an fsync takes milliseconds), so it runs off
the event loop. `anyio.to_thread.run_sync` would wake a thread for every task
and wake the loop again for every result; under load those hand-offs, each a
fight for the GIL, cost the loop more than the work. Here the threads take
jobs from one queue (a busy thread takes the next job without being woken)
and finished jobs go back in batches: one wake-up of the loop for all the
results that piled up meanwhile.

It never decides what to write: it runs the function it is given.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class DiskWriter:
    """`async with DiskWriter(threads) as disk: result = await disk.run(fn)`."""

    def __init__(self, threads: int = 4):
        self._count = threads
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._wake_pending = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> DiskWriter:
        self._loop = asyncio.get_running_loop()
        for n in range(self._count):
            thread = threading.Thread(target=self._work, name=f"imgedit-disk-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        with anyio.CancelScope(shield=True):  # jobs still queued are finished first
            for thread in self._threads:
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
            try:
                result = fn()
            except BaseException as exc:  # handed back to the awaiting task as it is
                error = exc
            with self._lock:
                self._done.append((future, result, error))
                wake, self._wake_pending = not self._wake_pending, True
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
