"""Classification and waits, as plain functions: no network, no sleeps."""

from __future__ import annotations

import pytest
from tenacity import AsyncRetrying

from pipeline.errors import BadResponse, ConnectError, OutcomeUnknown, RouteUnfit, StatusError
from pipeline.gateway.classify import final_verdict
from pipeline.gateway.retry import (
    Verdict,
    attempts,
    classify,
    is_overload,
    parse_retry_after,
    policy,
)


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (408, None, Verdict.RETRY),
        (409, None, Verdict.RETRY),
        (429, "rate_limit_exceeded", Verdict.RETRY),
        (500, None, Verdict.RETRY),
        (502, None, Verdict.RETRY),
        (503, None, Verdict.RETRY),
        (520, None, Verdict.RETRY),
        (504, None, Verdict.UNKNOWN),  # the relay never retries these: maybe billed upstream
        (524, None, Verdict.UNKNOWN),
        (400, "invalid_request_error", Verdict.TERMINAL),
        (400, "moderation_blocked", Verdict.TERMINAL),
        (413, None, Verdict.TERMINAL),
        (500, "invalid_request", Verdict.TERMINAL),
        (500, "sensitive_words_detected", Verdict.TERMINAL),
        (500, "bad_response_body", Verdict.TERMINAL),
        (400, "model_price_error", Verdict.MODEL),
        (500, "convert_request_failed", Verdict.ROUTE),
        (501, "api_not_implemented", Verdict.ROUTE),
        (404, None, Verdict.ROUTE),
        (401, "invalid_api_key", Verdict.FATAL),
        (401, "", Verdict.FATAL),
        (403, None, Verdict.FATAL),
        (403, "insufficient_user_quota", Verdict.FATAL),
        (429, "insufficient_quota", Verdict.FATAL),
        (503, "model_not_found", Verdict.RETRY),  # at first: all channels may be cooling down
    ],
)
def test_status_classification(status: int, code: str | None, verdict: Verdict) -> None:
    assert classify(StatusError(status, "x", code=code)) is verdict


def test_model_not_found_that_persists_aborts() -> None:
    exc = StatusError(503, "No available channel for model x", code="model_not_found")
    assert final_verdict(exc) is Verdict.FATAL
    assert final_verdict(StatusError(503, "overloaded")) is Verdict.RETRY


# LiteLLM in front of the relay: `code` becomes the status number, `type` its own words.
@pytest.mark.parametrize(("status", "message", "verdict"), [
    (429, "litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your current "
          "quota, please check your plan and billing details.", Verdict.FATAL),
    (429, "litellm.RateLimitError: insufficient_quota", Verdict.FATAL),
    (429, "litellm.RateLimitError: Rate limit reached for requests", Verdict.RETRY),
    (400, "litellm.BadRequestError: OpenAIException - moderation_blocked", Verdict.TERMINAL),
    (500, "litellm.APIConnectionError: OpenAIException - Server disconnected", Verdict.UNKNOWN),
    (500, "litellm.InternalServerError: sensitive_words_detected", Verdict.TERMINAL),
    (408, "litellm.Timeout: OpenAIException - <title>x | 524: A timeout occurred</title>",
     Verdict.UNKNOWN),
    (500, "litellm.InternalServerError: Cannot connect to host x:1", Verdict.RETRY),
    (400, "litellm.BadRequestError: model_price_error (request id: 1)", Verdict.MODEL),
    (429, "No deployments available for selected model, all_deployments_in_cooldown",
     Verdict.RETRY),
])
def test_a_gateway_in_front_is_classified_by_the_message(status: int, message: str,
                                                          verdict: Verdict) -> None:
    exc = StatusError(status, message, type="None", code=str(status))
    assert classify(exc) is verdict


def test_the_message_is_read_only_when_code_was_replaced() -> None:
    # The relay's own code wins: a message that merely mentions a word changes nothing.
    exc = StatusError(429, "insufficient_quota? no: slow down", code="rate_limit_exceeded")
    assert classify(exc) is Verdict.RETRY


def test_a_foreign_200_is_a_route_that_cannot_serve_the_model() -> None:
    assert classify(RouteUnfit("chat-shaped")) is Verdict.ROUTE


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


class Sends:
    """A request that answers from a script: each item an answer or an error to raise."""

    def __init__(self, *script: object):
        self.script = list(script)
        self.count = 0

    async def __call__(self) -> object:
        self.count += 1
        outcome = self.script.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_attempts_builds_no_policy_when_the_first_attempt_succeeds() -> None:
    def no_policy(deadline: float) -> AsyncRetrying:
        raise AssertionError("a policy was built for a first success")

    send = Sends("answer")
    assert await attempts(send, 60, no_policy) == "answer"
    assert send.count == 1


async def test_attempts_replays_the_first_failure_into_the_policy() -> None:
    # The policy sees the first failure as its attempt 1 (its wait and its log come from
    # it), and the second request is the only one sent after it: two in all, not three.
    first = StatusError(502, "bad gateway")
    seen: list[tuple[int, BaseException | None]] = []
    deadlines: list[float] = []

    def logged(deadline: float) -> AsyncRetrying:
        deadlines.append(deadline)
        return policy(retries=3, deadline=deadline, scale=0, before_sleep=lambda state: seen.append(
            (state.attempt_number, state.outcome.exception() if state.outcome else None)))

    send = Sends(first, "answer")
    assert await attempts(send, 60, logged) == "answer"
    assert send.count == 2
    assert seen == [(1, first)]
    assert len(deadlines) == 1 and 59 < deadlines[0] <= 60  # what is left of the 60 s


async def test_attempts_counts_the_first_failure_among_the_retries() -> None:
    send = Sends(*[StatusError(502, "bad gateway")] * 5)
    with pytest.raises(StatusError):
        await attempts(send, 60, lambda left: policy(retries=2, deadline=left, scale=0))
    assert send.count == 3  # the first and two retries


async def test_attempts_raises_what_is_not_retried_after_one_request() -> None:
    for error in (StatusError(400, "bad", code="moderation_blocked"), ZeroDivisionError()):
        send = Sends(error, "never sent")
        with pytest.raises(type(error)):
            await attempts(send, 60, lambda left: policy(retries=3, deadline=left, scale=0))
        assert send.count == 1


async def test_attempts_keeps_the_deadline_of_the_first_request() -> None:
    # A first attempt that used the whole deadline leaves the policy no time: no retry.
    send = Sends(StatusError(502, "bad gateway"), "late")
    with pytest.raises(StatusError):
        await attempts(send, 0, lambda left: policy(retries=3, deadline=left, scale=0))
    assert send.count == 1
