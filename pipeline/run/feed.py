"""Hand the planned tasks to the workers: many per turn of the event loop while unpaced.

`await stream.send(item)` gives the event loop a turn before every item, so a
producer written that way hands out one task per turn. With no rate to keep and
the loop busy reading, checking and saving answers, that capped a run at one task
per turn (~110 a second in the 2,000-task overhead run): on average 35 of its 128
workers had a task, the rest waited for one. While `eager()` says so, `feed` puts
items straight in while the queue has room and gives the loop a turn every BURST.

While requests are paced (a rate told or learnt) it hands out one a turn: a burst
of workers waking at once delayed paced departures, and the relay's sliding window
answered the catch-up with 429s (2 runs of 6 at a told 20/s, 0 of 12 without). And
until a rate is known to be free, too (`Throttle.unpaced`): with every slot busy when
an unknown limit's first 429 came back, twice as many requests were refused with it.

It never decides what to send, nor in what order: it passes on what it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

T = TypeVar("T")
BURST = 16  # items handed out between two turns of the loop, while eager


async def feed(items: Iterable[T], send: MemoryObjectSendStream[T],
               stopped: Callable[[], bool], eager: Callable[[], bool]) -> None:
    """Send every item in order, until the items end or `stopped()`; then close `send`."""
    async with send:
        handed = 0
        for item in items:
            if stopped():
                return
            if not eager():
                await send.send(item)  # one a turn
                continue
            try:
                send.send_nowait(item)
            except anyio.WouldBlock:  # the queue is full: wait for a worker to take one
                await send.send(item)
            handed += 1
            if handed % BURST == 0:
                await anyio.lowlevel.checkpoint()
