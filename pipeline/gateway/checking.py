"""Where an answer's images are checked: in a worker thread, or in place when that is cheaper.

Owns `Checking`, one per Gateway. A check in a worker thread leaves the event loop
free to send while zlib inflates beside it, which is what a run with time to spare
wants: at 0.5 s a request, answers come back in waves, and checking a wave in place
held back the requests waiting to leave (Little's law run, 6 runs each, alternated:
the send took 10.55 s, median, with threads and 10.78 s in place). But a thread costs
the loop a hand-off, and the GIL back ~40 times a check; where the loop is the
bottleneck, as in `make bench`'s overhead run, that is pure loss: small PNGs checked
in place did 312 tasks/s against 264 in threads (6 runs each, alternated), at 3.35
against 3.88 ms of CPU a task.

So while the process keeps more than BUSY of a core busy (measured over WINDOW), a
small PNG (`cheap_to_check`) is checked in place; anything else, or a process with
time to spare, goes to a worker thread, AT_ONCE at a time. (The overhead run used
2.58 ms of CPU a task at 408 tasks/s, a whole core; the Little's law run 4.8 ms at 90,
0.43 of one. At 0.8 instead of 0.6 the overhead run lost a few percent: 357 -> 344.)
The gateway's answer time, the signal before, missed the overhead run: with 64
requests in flight and the loop behind, each answer waited ~0.18 s to be read,
however quick the gateway.

Never decides what passes: `answer.check_image` does, wherever it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from pipeline.gateway.answer import check_image, in_a_thread
from pipeline.gateway.pngcheck import SIGNATURE as PNG_SIGNATURE

BUSY = 0.6  # of one core, over the last WINDOW: above it, small PNGs are checked in place
WINDOW = 0.1  # seconds
AT_ONCE = 2  # images checked in worker threads at once: the machine's cores, and memory
IN_PLACE_BYTES = 256 * 1024  # a PNG this small, of at most IN_PLACE_PIXELS,
IN_PLACE_PIXELS = 1024 * 1024  # costs ~2 ms of CPU at most to check


class Checking:
    """`await checking.check(data)`: `check_image(data)` where it costs the least."""

    def __init__(self, threads: int = AT_ONCE, *,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time):
        self.limiter = anyio.CapacityLimiter(threads)
        self.busy = 0.0  # share of one core the process used over the last window
        self._clock, self._cpu = clock, cpu
        self._since: tuple[float, float] | None = None  # the window's start: wall, CPU

    def measure(self) -> None:
        """Close the window when it is WINDOW long: `busy` is then its CPU over its time."""
        # The CPU clock is a system call (4 us median in a run, 37 us p90, a few ms at
        # worst): read only when a window opens or closes; the wall clock at every check.
        now = self._clock()
        if self._since is None:
            self._since = now, self._cpu()
        elif now - self._since[0] >= WINDOW:
            used = self._cpu()
            self.busy = (used - self._since[1]) / (now - self._since[0])
            self._since = now, used

    async def check(self, data: bytes) -> tuple[bytes, str]:
        self.measure()
        if self.busy > BUSY and cheap_to_check(data):
            return check_image(data)
        return await in_a_thread(data, self.limiter)


def cheap_to_check(data: bytes) -> bool:
    """A PNG of at most IN_PLACE_BYTES whose header says at most IN_PLACE_PIXELS (what it
    inflates to)."""
    if len(data) > IN_PLACE_BYTES or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    return int.from_bytes(data[16:20]) * int.from_bytes(data[20:24]) <= IN_PLACE_PIXELS
