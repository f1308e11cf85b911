"""Group commit: the `submitted` rows of requests leaving together share one commit.

A request may leave only once its `submitted` row (and its claimed outputs) is
committed: after a crash the task must show as possibly billed. When answers
come back together (and with a fixed latency they keep coming back in waves),
the requests that take their places are ready in the same turn of the event
loop. One commit each means a commit per request, each a write of the WAL and
a wait for the GIL; here the first asks for a commit at the end of the turn,
and every row written meanwhile rides on it.

It never writes rows itself and never lets a request leave before its row is
committed: if the commit fails, every request waiting on it fails with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel


@dataclass
class _Round:
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, commit: Callable[[], None]):
        self._commit = commit
        self._next: _Round | None = None

    async def committed(self) -> None:
        """Return once every row written before this call is committed."""
        if (round_ := self._next) is None:
            self._next = round_ = _Round()
            try:
                # One turn of the loop: whoever else is ready now writes its row first.
                await anyio.lowlevel.cancel_shielded_checkpoint()
            finally:
                self._next = None
                try:
                    self._commit()
                except BaseException as exc:
                    round_.error = exc
                    raise
                finally:
                    round_.done.set()
            return
        with anyio.CancelScope(shield=True):  # the leader commits whatever happens to us
            await round_.done.wait()
        if round_.error is not None:
            raise round_.error
