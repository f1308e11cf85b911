"""How fast and how many: pacing, a rate learnt from 429s, the Retry-After pause, concurrency.

Small objects, handed to the scheduler from outside. Each takes a clock (and
a sleep) so tests move time instead of waiting. None of them sends requests
or knows about tasks.

The relay limits requests in a sliding window (new-api `middleware/model-rate-
limit.go`: at most N requests in any W seconds, refused ones not counted) and
refuses with a bare 429: no Retry-After, often no body. So:

- `Pacer` spaces departures evenly on a fixed timeline, a small MARGIN under the
  rate, so that any N consecutive requests span more than W at the server even
  when each one's trip there varies by a few ms. The scheduler takes its turn as
  late as it can, once the body is built (see `Gateway.edit(ready=...)`), and says
  when the request really leaves (`left`): its ledger row's commit comes between
  the two and can take milliseconds, so the next turn keeps its distance from then.
- `Throttle` learns the rate when nobody told it, or when a 429 says the told
  rate is too high: AIMD on the request rate. A 429 cuts the rate to BETA times
  what the gateway let through lately (multiplicative decrease) and costs one
  request interval of pause, not a stop of every worker; each window of
  successes adds a fixed step back (additive increase), never above a told rate.
  A Retry-After the server sends still rules: every worker waits it out.
- `AdaptiveConcurrency` halves the requests in flight when the upstream says it
  is overloaded (a 503), and adds one back per window of successes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

MARGIN = 0.025  # pace 2.5% under the rate: 25 ms of jitter allowed over a 1 s window
SLACK = 0.005  # seconds of a late wake-up the next departures make up
SHORTEST_WINDOW = 1.0  # the relay counts requests over whole seconds, one at least
HORIZON = 60.0  # seconds of successes kept to estimate what the gateway lets through


class Pacer:
    """Departures evenly spaced at `rate` (less MARGIN) per second; none when rate is None.

    The timeline is fixed: up to SLACK of a late wake-up is made up by the next
    departures, so a busy event loop lowers the rate less, and a long stall is never
    made up by a burst. Any N requests in a row span at least N intervals less SLACK.
    `hold(until)` keeps every departure back until then.
    """

    def __init__(self, rate: float | None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = anyio.sleep):
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next = -math.inf  # the earliest moment the next request may leave
        self._lock = anyio.Lock()  # waiters leave in the order they came

    @property
    def interval(self) -> float:
        return (1 + MARGIN) / self.rate if self.rate else 0.0

    def hold(self, until: float) -> None:
        self._next = max(self._next, until)

    def left(self) -> None:
        """A request leaves now, perhaps well after its turn (its ledger commit came in
        between: 5-12 ms here when it ran a WAL checkpoint, more on a slow disk): the next
        one keeps a whole interval from now, less SLACK. Spaced from its turn instead, a
        request 30 ms late and the next one on time reach the server 21 ms apart, and a
        20/s window refuses the 20th after them (MARGIN covers ~20 ms)."""
        if self.rate is not None:
            self._next = max(self._next, self.clock() + self.interval - SLACK)

    async def turn(self) -> float:
        """Wait for this request's turn; returns the moment it may leave."""
        now = self.clock()
        if self.rate is None and self._next <= now:
            return now
        async with self._lock:
            while True:
                now = self.clock()
                # Behind the timeline (a late wake-up, a stall, idle time): it restarts
                # SLACK before now, so the next departures make up that much, no more.
                due = self._next if self.rate is None else max(self._next, now - SLACK)
                if due <= now:
                    break
                await self.sleep(due - now)
            if self.rate is not None:
                self._next = due + self.interval
            return now


class Cooldown:
    """A pause every worker honours: the server said when to come back (Retry-After)."""

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


class Throttle:
    """The request rate: told, or learnt from 429s (AIMD), and the server's Retry-After.

    The scheduler awaits `turn()` before each request and reports each answer with
    `on_success` / `on_limited`, passing back the departure time `turn()` gave.
    """

    BETA = 0.9  # a 429 cuts the rate to this share of what got through lately
    STEP = 0.02  # each window of successes adds this share of the rate set at the last cut

    def __init__(self, rate: float | None = None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = anyio.sleep):
        self.ceiling = rate  # a rate the user gave is never exceeded
        self.clock = clock
        self.pacer = Pacer(rate, clock=clock, sleep=sleep)
        self.cooldown = Cooldown(clock=clock, sleep=sleep)
        # Departures within HORIZON: of every request, of those answered 429, of successes.
        self._sent: deque[float] = deque()
        self._refusals: deque[float] = deque()
        self._passed: deque[float] = deque()
        self._first: float | None = None
        self._cut_at = -math.inf
        self._step = 0.0
        self._successes = 0  # since the rate last changed
        self._refused = 0  # 429s in a row, each for a request sent after the cut before

    @property
    def rate(self) -> float | None:
        return self.pacer.rate

    def unpaced(self, proven: int) -> bool:
        """No rate to keep (none told, no 429 yet) and `proven` answers already through.

        Until then the scheduler hands out one task a loop turn: the first requests are
        the ones that find an unknown limit, and each one on the wire when the first
        429 comes back is refused with it."""
        return self.rate is None and len(self._passed) >= proven

    async def turn(self) -> float:
        departed = await self.pacer.turn()
        if self._first is None:
            self._first = departed
        self._sent.append(departed)
        _forget(self._sent, departed - HORIZON)
        return departed

    def left(self) -> None:
        self.pacer.left()

    def on_success(self, departed: float) -> None:
        self._refused = 0
        self._passed.append(departed)
        _forget(self._passed, self.clock() - HORIZON)
        if self.rate is None or self._step == 0:
            return  # told a rate and never refused: nothing to learn
        self._successes += 1
        if self._successes >= max(4, math.ceil(self.rate * SHORTEST_WINDOW)):
            # Additive increase: one step per window of successes, up to a told rate.
            rate = self.rate + self._step
            self.pacer.rate = rate if self.ceiling is None else min(self.ceiling, rate)
            self._successes = 0

    def on_limited(self, departed: float, retry_after: float | None = None) -> None:
        """A 429: slow down, and pause one interval (or as long as the server said)."""
        now = self.clock()
        if retry_after is not None:
            self.cooldown.extend(retry_after)  # the server's word rules
        self._refusals.append(departed)
        _forget(self._refusals, now - HORIZON)
        current = self.rate
        if current is not None and departed < self._cut_at:
            return  # on the wire before the last cut, which already answered it
        # A share of what got through, not of our own rate: 429s that keep coming while
        # a long window is full bring the rate down to what that window lets through.
        through, oldest = self._let_through(departed, now)
        cut = self.BETA * (through or current or 1 / SHORTEST_WINDOW)
        self.pacer.rate = cut if current is None else min(current, cut)
        self._step = self.STEP * self.pacer.rate
        self._cut_at, self._successes = now, 0
        if current is None:
            # An unpaced burst filled the window: nothing gets through until its first
            # request is one window old.
            self.pacer.hold(oldest + SHORTEST_WINDOW)
        # One interval; twice as long for each further 429 in a row (the window is full
        # for longer than we thought), up to HORIZON.
        self._refused += 1
        self.pacer.hold(now + min(HORIZON, self.pacer.interval * 2 ** (self._refused - 1)))

    def _let_through(self, departed: float, now: float) -> tuple[float, float]:
        """Requests per second the gateway accepts, and the first departure of the window
        before `departed`: the requests sent in the window before the refused one and not
        refused themselves (what the server counted when it refused it; answers still on
        their way count too), or the successes over HORIZON, whichever is more (a window
        of a minute lets a burst through, then nothing)."""
        start = departed - SHORTEST_WINDOW
        sent = [t for t in _since(self._sent, start) if t < departed]
        refused = sum(1 for t in _since(self._refusals, start) if t < departed)
        _forget(self._passed, now - HORIZON)
        since = now - (self._first if self._first is not None else now)
        longer = len(self._passed) / min(HORIZON, max(SHORTEST_WINDOW, since))
        through = max((len(sent) - refused) / SHORTEST_WINDOW, longer)
        return through, min(sent, default=departed)


def _since(times: deque[float], start: float) -> list[float]:
    """The times at or after `start`, read from the newest end (the deque is in order)."""
    found = []
    for t in reversed(times):
        if t < start:
            break
        found.append(t)
    return found


def _forget(times: deque[float], before: float) -> None:
    while times and times[0] < before:
        times.popleft()


class AdaptiveConcurrency:
    """AIMD: halve the number of requests in flight on an upstream overload, add one
    back after `window` successes, never above `ceiling` nor below 1.

    A request holds its slot only while it is on the wire (`Slot`): taken once its body
    is built, given back as soon as its answer is read. Building the body and checking
    and saving the answer are our work, and a slot held through them leaves the gateway
    idle while answers that came back together wait their turn to be decoded. A freed
    slot wakes one waiter, not all of them: a hundred waiting workers woken per answer
    is the event loop's time spent for nothing."""

    def __init__(self, ceiling: int, *, window: int | None = None):
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.window = window or max(1, ceiling)
        self.in_flight = 0
        self._waiting: deque[anyio.Event] = deque()
        self._promised = 0  # waiters woken for a free slot that have not run yet

    def slot(self) -> Slot:
        """A place on the wire for one request, taken later (`Slot.take`)."""
        return Slot(self)

    async def _acquire(self) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not self._waiting and self.in_flight + self._promised < int(self.limit):
            self.in_flight += 1
            return
        woken = anyio.Event()
        self._waiting.append(woken)
        try:
            await woken.wait()
        except BaseException:
            if woken.is_set():  # the slot it was woken for goes to the next in line
                self._promised -= 1
                self._wake()
            else:
                self._waiting.remove(woken)
            raise
        self._promised -= 1
        self.in_flight += 1

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        """Wake as many waiters, first come first served, as there are free slots (a
        woken waiter's slot is promised to it until it runs)."""
        while self._waiting and self.in_flight + self._promised < int(self.limit):
            self._waiting.popleft().set()
            self._promised += 1

    def on_success(self) -> None:
        # Additive increase: +1 slot per `window` successes.
        before = int(self.limit)
        self.limit = min(self.ceiling, self.limit + 1 / self.window)
        if int(self.limit) > before:
            self._wake()

    def on_overload(self) -> None:
        self.limit = max(1.0, self.limit / 2)


class Slot:
    """One request's place on the wire: `take` waits for a free one, `give_back` returns
    it (once; later calls, or calls before `take`, do nothing)."""

    def __init__(self, limit: AdaptiveConcurrency):
        self._limit = limit
        self.held = False

    async def take(self) -> None:
        assert not self.held, "a slot is taken once"
        await self._limit._acquire()
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self._limit._release()
