"""The simulator's request limit, as the relay counts it: a sliding window, and a bare 429.

Copied from new-api (SolveaCX/new-api, which QuantumNous/new-api shares this with):
`middleware/model-rate-limit.go`, the `ModelRequestRateLimit` middleware on every
`/v1` relay route, after `TokenAuth`. Without Redis it calls
`inMemoryRateLimiter.Request(key, maxCount, duration)` from `common/rate-limit.go`:

- the limiter keeps, per user, the times of the last `maxCount` requests it let
  through ("[old <-- new]");
- a request goes through while fewer than `maxCount` are kept, or when the oldest
  kept is at least `duration` seconds old (the oldest then leaves the list);
- a refused request is not recorded: waiting is what frees the window, and
  retrying early costs nothing but another 429;
- it is refused with `c.Status(http.StatusTooManyRequests); c.Abort()`: status 429,
  an empty body, and no Retry-After header (`middleware/rate-limit.go` answers its
  global limit the same way).

One deliberate difference: the relay stamps requests with `time.Now().Unix()`,
whole seconds, which only ever lets more through than exact times do (a request
that passes an exact window passes the relay's). This window uses the exact
clock, so a client that never trips it never trips the relay.

`retry_after=True` answers like OpenAI's own limit instead: its JSON error
(`rate_limit_exceeded`) with `retry-after-ms` and `Retry-After` saying when the
window frees a place. The relay never sends those; some upstreams do.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

from pipeline.simulator.faults import error_response, retry_headers

Clock = Callable[[], float]


class SlidingWindow:
    """At most `count` requests in any `period` seconds, counting only those let through."""

    def __init__(self, count: float, period: float, clock: Clock = time.monotonic):
        self.count = max(1, int(count))  # the relay's limit is a whole number of requests
        self.period = period
        self._clock = clock
        self._admitted: deque[float] = deque()

    def reset(self) -> None:
        self._admitted.clear()

    def admit(self) -> bool:
        """True (and recorded) if a request arriving now may go through."""
        now = self._clock()
        if len(self._admitted) >= self.count:
            if now - self._admitted[0] < self.period:
                return False
            self._admitted.popleft()
        self._admitted.append(now)
        return True

    def wait(self) -> float:
        """Seconds until the window has a place again (0 when it has one now)."""
        if len(self._admitted) < self.count:
            return 0.0
        return max(0.0, self._admitted[0] + self.period - self._clock())


def refusal(window: SlidingWindow, *, retry_after: bool) -> web.Response:
    """The 429 a refused request gets: the relay's bare one, or OpenAI's when asked."""
    if not retry_after:
        return web.Response(status=429)
    return error_response(429, "Rate limit reached for requests.", type="rate_limit_exceeded",
                          code="rate_limit_exceeded", headers=retry_headers(window.wait()))
