"""Classification and waits, as plain functions: no network, no sleeps."""

from __future__ import annotations

import pytest

from pipeline.errors import BadResponse, ConnectError, OutcomeUnknown, StatusError
from pipeline.gateway.retry import Verdict, classify, is_overload, parse_retry_after, policy


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (408, None, Verdict.RETRY),
        (409, None, Verdict.RETRY),
        (429, "rate_limit_exceeded", Verdict.RETRY),
        (500, None, Verdict.RETRY),
        (502, None, Verdict.RETRY),
        (503, None, Verdict.RETRY),
        (504, None, Verdict.RETRY),
        (520, None, Verdict.RETRY),
        (524, None, Verdict.RETRY),
        (400, "invalid_request_error", Verdict.TERMINAL),
        (400, "moderation_blocked", Verdict.TERMINAL),
        (413, None, Verdict.TERMINAL),
        (500, "convert_request_failed", Verdict.TERMINAL),
        (500, "invalid_request", Verdict.TERMINAL),
        (401, "invalid_api_key", Verdict.FATAL),
        (403, None, Verdict.FATAL),
        (403, "insufficient_user_quota", Verdict.FATAL),
        (429, "insufficient_quota", Verdict.FATAL),
        (503, "model_not_found", Verdict.FATAL),
    ],
)
def test_status_classification(status: int, code: str | None, verdict: Verdict) -> None:
    assert classify(StatusError(status, "x", code=code)) is verdict


def test_transport_classification() -> None:
    assert classify(ConnectError("refused")) is Verdict.RETRY
    assert classify(OutcomeUnknown("read timeout")) is Verdict.UNKNOWN
    assert classify(BadResponse("not an image")) is Verdict.RETRY


def test_overload_signs() -> None:
    assert is_overload(StatusError(429, "slow down", code="rate_limit_exceeded"))
    assert is_overload(StatusError(503, "当前分组上游负载已饱和，请稍后再试"))
    assert is_overload(StatusError(503, "upstream overloaded", code="overloaded"))
    assert not is_overload(StatusError(502, "bad gateway"))
    assert not is_overload(ConnectError("refused"))


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"},
                             now=1445412480.0) == 10.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "100000"}) == 120.0  # capped


async def test_policy_retries_then_gives_up_without_sleeping() -> None:
    calls = 0
    with pytest.raises(StatusError):
        async for attempt in policy(retries=3, deadline=60, scale=0):
            with attempt:
                calls += 1
                raise StatusError(502, "bad gateway")
    assert calls == 4


async def test_policy_does_not_retry_terminal_or_fatal() -> None:
    for exc in (StatusError(400, "bad", code="moderation_blocked"), StatusError(401, "key")):
        calls = 0
        with pytest.raises(StatusError):
            async for attempt in policy(retries=3, deadline=60, scale=0):
                with attempt:
                    calls += 1
                    raise exc
        assert calls == 1


async def test_policy_holds_unknown_when_told() -> None:
    calls = 0
    with pytest.raises(OutcomeUnknown):
        async for attempt in policy(retries=3, deadline=60, retry_unknown=False, scale=0):
            with attempt:
                calls += 1
                raise OutcomeUnknown("timeout")
    assert calls == 1


async def test_policy_does_not_retry_bugs() -> None:
    # reraise=True: the bug itself surfaces, not tenacity's RetryError wrapper
    calls = 0
    with pytest.raises(ZeroDivisionError):
        async for attempt in policy(retries=3, deadline=60, scale=0):
            with attempt:
                calls += 1
                _ = 1 / 0
    assert calls == 1
