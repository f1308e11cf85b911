"""How fast and how many: the rate limiter, the shared 429 cooldown, adaptive concurrency.

Small objects with one verb each, handed to the scheduler from outside. Each
takes a clock (and a sleep) so tests move time instead of waiting. None of
them sends requests or knows about tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

class RateLimiter:
    """A token bucket holding at most `burst` tokens, refilled at `per_second`.

    Callers queue in order; with burst 1 requests are evenly spaced, so a
    server enforcing the same rate over any window never answers 429.
    """

    def __init__(self, per_second: float, *, burst: float = 1.0,
                 clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep):
        self.interval = 1.0 / per_second
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self._next_free = -math.inf  # time at which the bucket holds one token
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self.clock()
            # Unused time refills the bucket, but never beyond `burst` tokens.
            start = max(self._next_free, now - (self.burst - 1) * self.interval)
            self._next_free = start + self.interval
            if start > now:
                await self.sleep(start - now)


class Cooldown:
    """A pause every worker honours: one 429 stops all of them until it ends,
    instead of each worker hammering the gateway on its own."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep):
        self.clock = clock
        self.sleep = sleep
        self.until = 0.0

    def extend(self, seconds: float) -> None:
        self.until = max(self.until, self.clock() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.until - self.clock())

    async def wait(self) -> None:
        while (left := self.remaining()) > 0:
            await self.sleep(left)


class AdaptiveConcurrency:
    """AIMD: halve the number of requests in flight on 429/overload, add one
    back after `window` successes, never above `ceiling` nor below 1."""

    def __init__(self, ceiling: int, *, window: int | None = None):
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.window = window or max(1, ceiling)
        self.in_flight = 0
        self._changed = anyio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            while self.in_flight >= int(self.limit):
                await self._changed.wait()
            self.in_flight += 1

    async def __aexit__(self, *exc_info: object) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def on_success(self) -> None:
        # Additive increase: +1 slot per `window` successes.
        self.limit = min(self.ceiling, self.limit + 1 / self.window)

    def on_overload(self) -> None:
        self.limit = max(1.0, self.limit / 2)
