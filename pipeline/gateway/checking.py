"""Where an answer's images are checked: in a worker thread, or in place when that is cheaper.

Owns `Checking`, one per Gateway. A check in a worker thread leaves the event loop
free to send while it runs, which is what a gateway that takes seconds to answer
wants: there a check in place holds back the requests waiting to leave (at 0.5 s a
request, answers come back in waves, and checking a wave in place cost ~10% of the
throughput). But a worker takes the GIL back ~40 times during a PNG check (every zlib
call lets go of it), and each time waits for a busy loop to let go in turn: a 16 KB
1024x1024 answer spent 8-12 ms in a worker for 1.7 ms of work (with zlib; zlib-ng
has since cut its inflating from 1.95 to 0.58 ms). Against a gateway that
answers at once (`make bench`'s overhead run, 2,000 tasks, median of 4 runs each,
alternated) checking such answers in place took 124 -> 142 tasks/s and the CPU per
task 9.2 -> 8.2 ms, with the 0.5 s run unchanged. So while the gateway answers within
QUICK_ANSWER (on average over the last answers), the loop is the bottleneck and a
small PNG (`cheap_to_check`) is checked in place; anything else, or a slower gateway,
goes to a worker thread, AT_ONCE at a time.

Never decides what passes: `answer.check_image` does, wherever it runs.
"""

from __future__ import annotations

import anyio

from pipeline.gateway.answer import check_image, in_a_thread
from pipeline.gateway.pngcheck import SIGNATURE as PNG_SIGNATURE

QUICK_ANSWER = 0.05  # seconds from request to answer, on average, for checks in place
WEIGHT = 0.1  # of the newest answer's time in that average
AT_ONCE = 2  # images checked in worker threads at once: the machine's cores, and memory
IN_PLACE_BYTES = 256 * 1024  # a PNG this small, of at most IN_PLACE_PIXELS,
IN_PLACE_PIXELS = 1024 * 1024  # costs ~2 ms of CPU at most to check


class Checking:
    """`await checking.check(data)`: `check_image(data)` where it costs the least."""

    def __init__(self, threads: int = AT_ONCE):
        self.limiter = anyio.CapacityLimiter(threads)
        self.answer_time: float | None = None  # seconds, a running average

    def answered_in(self, seconds: float) -> None:
        """Count one answer that took `seconds` from its request."""
        last = self.answer_time
        self.answer_time = seconds if last is None else last + WEIGHT * (seconds - last)

    @property
    def quick(self) -> bool:
        return self.answer_time is not None and self.answer_time < QUICK_ANSWER

    async def check(self, data: bytes) -> tuple[bytes, str]:
        if self.quick and cheap_to_check(data):
            return check_image(data)
        return await in_a_thread(data, self.limiter)


def cheap_to_check(data: bytes) -> bool:
    """A PNG of at most IN_PLACE_BYTES whose header says at most IN_PLACE_PIXELS (what it
    inflates to)."""
    if len(data) > IN_PLACE_BYTES or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    return int.from_bytes(data[16:20]) * int.from_bytes(data[20:24]) <= IN_PLACE_PIXELS
