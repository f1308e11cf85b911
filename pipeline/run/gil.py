"""The event loop first: a short GIL switch interval, and the heap frozen, while a run sends.

The loop's thread gives the GIL up at every system call it makes (a socket
write, an SQLite step, a commit) and then has to win it back from the threads
that check and save answers. Python lets a thread that holds the GIL keep it
for the whole switch interval, 5 ms by default, so each of those calls could
cost the loop up to 5 ms, a few dozen times a task: requests left late while
the gateway had room for them. With a 0.5 ms interval the loop waits at most
that, and the threads lose little (their heavy work, zlib and Pillow's
decoders, an fsync, runs without the GIL).

The collector's full pass walks every object the process holds, most of them
the modules, config and plan made before sending: 27-42 ms of a stopped loop,
twice in a 3,000-task run. A request that took its pacer's turn just before one
reached the relay ~30 ms late, and the next on time, 6-23 ms after it: the relay's
20/s window refused the 20th after them (in 7 of 16 400-task runs told the
right rate). Frozen (`gc.freeze`), what exists when sending starts is left out of
every pass (it lives as long as the run anyway); the one full pass left took 6 ms.

It never changes either outside a run: a program that calls the library gets
its own interval back when the run ends, and its heap unfrozen, unless it had
frozen it itself (then it is left as it was).
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

LOOP_FIRST_S = 0.0005


@contextlib.contextmanager
def loop_first(interval: float = LOOP_FIRST_S) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval))
    freeze = gc.get_freeze_count() == 0  # a caller's frozen heap is the caller's business
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        sys.setswitchinterval(before)
        if freeze:
            gc.unfreeze()
