"""What to do after a failed attempt, and how long to wait before the next one.

Owns the tenacity policy built on classify.py's verdicts (re-exported here), the
server's wait (Retry-After) and the backoff. Plain functions, tested on their own; it
never sends a request, writes the ledger or sleeps by itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeVar

import anyio

from pipeline.errors import BadResponse, OutcomeUnknown, RequestError, StatusError
from pipeline.gateway.classify import Verdict, classify

if TYPE_CHECKING:  # tenacity is imported when a first attempt fails (see `attempts`)
    from tenacity import AsyncRetrying, RetryCallState

__all__ = ["Verdict", "attempts", "classify", "is_overload", "may_be_billed",
           "parse_retry_after", "policy", "should_retry"]

T = TypeVar("T")

MAX_SERVER_WAIT = 120.0  # never trust a Retry-After longer than this
# Testing switch: scales every wait; IMGEDIT_RETRY_WAIT_SCALE=0 removes them.
WAIT_SCALE_ENV = "IMGEDIT_RETRY_WAIT_SCALE"


def may_be_billed(exc: RequestError) -> bool:
    """The gateway may have charged for this attempt: it answered 200 (usable or not), or
    the upload went and no answer came."""
    return isinstance(exc, OutcomeUnknown) or (isinstance(exc, BadResponse)
                                               and exc.status == 200)


def is_overload(exc: BaseException) -> bool:
    """A sign the gateway wants less from us: 429 or a relay overload answer."""
    if not isinstance(exc, StatusError):
        return False
    text = f"{exc.code} {exc.type} {exc.message}".lower()
    return exc.status == 429 or (exc.status == 503 and ("overload" in text or "负载" in text))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `Retry-After`
    as seconds or an HTTP date. None when it did not say (the relay usually doesn't)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return _bounded(float(ms) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return _bounded(when - (time.time() if now is None else now))


def _bounded(seconds: float) -> float | None:
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0 if seconds == seconds else None
    return min(seconds, MAX_SERVER_WAIT)


def wait_scale() -> float:
    return float(os.environ.get(WAIT_SCALE_ENV, "1"))


def should_retry(exc: BaseException, *, retry_unknown: bool = True) -> bool:
    if not isinstance(exc, RequestError):
        return False  # a bug, not a failed request: let it surface
    verdict = classify(exc)
    return verdict is Verdict.RETRY or (verdict is Verdict.UNKNOWN and retry_unknown)


class _Wait:
    """The server's wait when it sent one, else capped exponential backoff with jitter;
    none after a bare 429, which the throttle answers by pacing (limits.Throttle)."""

    def __init__(self, initial: float, cap: float, scale: float):
        from tenacity import wait_exponential_jitter

        self.backoff = wait_exponential_jitter(initial=initial, max=cap, jitter=initial)
        self.scale = scale

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        server = exc.retry_after if isinstance(exc, StatusError) else None
        if server is None and isinstance(exc, StatusError) and exc.status == 429:
            return 0.0  # a bare 429: the throttle slows the pace and spaces the retry
        seconds = server if server is not None else self.backoff(state)
        return seconds * self.scale


def policy(
    *,
    retries: int,
    deadline: float,
    retry_unknown: bool = True,
    initial: float = 1.0,
    cap: float = 60.0,
    scale: float | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncRetrying:
    """`retries` further attempts after the first, all within `deadline` seconds.
    `sleep` waits between attempts (the scheduler's wakes early when the run stops)."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay

    return AsyncRetrying(
        sleep=sleep or anyio.sleep,
        stop=stop_after_attempt(retries + 1) | stop_after_delay(deadline),
        wait=_Wait(initial, cap, wait_scale() if scale is None else scale),
        retry=retry_if_exception(lambda e: should_retry(e, retry_unknown=retry_unknown)),
        before_sleep=before_sleep,
        reraise=True,
    )


async def attempts(send: Callable[[], Awaitable[T]], deadline: float,
                   policy: Callable[[float], AsyncRetrying]) -> T:
    """`send()` until it succeeds or `policy` gives up, all within `deadline` seconds.

    The first attempt goes alone: the policy (`policy(seconds left)`) is built only once it
    failed, and gets that failure replayed as its own first attempt, so its waits, its
    count and its logging are what they would have been, and no request is sent twice.
    Building and driving a tenacity policy for every task cost ~10% of the event loop's
    CPU in `make bench`'s overhead run, where nearly every first attempt succeeds; and a
    run whose first attempts all succeed never imports tenacity (~10 ms of start-up)."""
    started = time.monotonic()
    try:
        return await send()
    except RequestError as exc:
        failure: RequestError | None = exc

    async def again() -> T:
        nonlocal failure
        if failure is not None:
            replayed, failure = failure, None
            raise replayed
        return await send()

    return await policy(deadline - (time.monotonic() - started))(again)
