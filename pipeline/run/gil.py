"""The event loop first: a short GIL switch interval while a run sends.

The loop's thread gives the GIL up at every system call it makes (a socket
write, an SQLite step, a commit) and then has to win it back from the threads
that check and save answers. Python lets a thread that holds the GIL keep it
for the whole switch interval, 5 ms by default, so each of those calls could
cost the loop up to 5 ms, a few dozen times a task: requests left late while
the gateway had room for them. With a 0.5 ms interval the loop waits at most
that, and the threads lose little (their heavy work, zlib and Pillow's
decoders, an fsync, runs without the GIL).

It never changes the interval outside a run: a program that calls the library
gets its own back when the run ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

LOOP_FIRST_S = 0.0005


@contextlib.contextmanager
def loop_first(interval: float = LOOP_FIRST_S) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
