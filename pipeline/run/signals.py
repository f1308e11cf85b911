"""Ctrl-C and SIGTERM during a run: stop launching, give requests in flight a grace period.

Moved out of runner.py as it was (runner.py stays under 400 lines).
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from pipeline.run.scheduler import Scheduler


async def watch_signals(scheduler: Scheduler, scope: anyio.CancelScope, grace: float,
                        signalled: list[signal.Signals]) -> None:
    """First signal: stop launching, let in-flight requests finish within `grace`.
    Second signal, or grace over: cancel what is left (recorded as unknown)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            signalled.append(signal.Signals(signum))
            if len(signalled) > 1:
                scope.cancel()
                return
            scheduler.stop.set(f"interrupted by {signal.Signals(signum).name}")
            print(f"{signal.Signals(signum).name}: no new requests; waiting up to {grace:g}s "
                  "for those in flight (signal again to stop now)", file=sys.stderr)
            scope.deadline = anyio.current_time() + grace
