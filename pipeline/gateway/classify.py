"""What a failed attempt means: retry it, wait and see, give up on the task, on its model,
on its route, or on the whole run.

Owns the table of "The API" in DESIGN.md, written from the relay's own code
(new-api: `types/error.go` for the codes, `controller/relay.go` for which of
them it answers with which status, `service/error.go` for what it passes
through from the upstream). Gateways in front of the relay (LiteLLM) turn
`code` into the status number and `type` into their own words, so when `code`
is a number the message is read for the relay's codes too.

Plain functions over errors.py's classes; it never sends, sleeps or records.
"""

from __future__ import annotations

import enum
import re

from pipeline.errors import (
    BadResponse,
    OutcomeUnknown,
    PrepareFailed,
    RequestError,
    RouteUnfit,
    StatusError,
)


class Verdict(enum.StrEnum):
    RETRY = "retry"  # worth another attempt
    UNKNOWN = "unknown"  # the gateway may have billed it; retried unless told not to
    TERMINAL = "terminal"  # this task cannot succeed as asked: record and move on
    MODEL = "model"  # no task of this model can succeed here: stop them, the rest goes on
    ROUTE = "route"  # this route cannot serve this model: its fallback, else stop the model
    FATAL = "fatal"  # no task can succeed (bad key, no quota): stop the run


# Codes the relay answers (types/error.go) and what each means for us.
FATAL_CODES = frozenset({"insufficient_quota", "insufficient_user_quota",
                         "pre_consume_token_quota_failed", "invalid_api_key"})
MODEL_CODES = frozenset({"model_price_error", "model_officially_unsupported"})
ROUTE_CODES = frozenset({"convert_request_failed", "api_not_implemented"})
TERMINAL_CODES = frozenset({"sensitive_words_detected", "bad_response_body", "invalid_request",
                            "moderation_blocked", "prompt_blocked", "content_policy_violation",
                            "read_request_body_failed"})
# Asked again a few times before it aborts the run: the relay answers it for a while
# when every channel of a model was auto-disabled (middleware/distributor.go).
PERSISTENT_CODES = frozenset({"model_not_found"})
KNOWN_CODES = FATAL_CODES | MODEL_CODES | ROUTE_CODES | TERMINAL_CODES | PERSISTENT_CODES
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 520, 521, 522, 523})
# The relay never retries these itself (controller/relay.go shouldRetry): the upstream
# may have done, and billed, the work.
UNKNOWN_STATUSES = frozenset({504, 524})
# LiteLLM's words for an upstream that broke off after the request went (measured with
# litellm 1.108.7: a dropped connection is 500 "Server disconnected", the relay's 524 is
# 408 "litellm.Timeout"). "Cannot connect to host" is not among them: nothing was sent.
_DROPPED = re.compile(r"server disconnected|connection (?:reset|aborted|closed)|"
                      r"remoteprotocolerror|incomplete ?read|litellm\.timeout|"
                      r"error code 52[24]|504 gateway time", re.I)
_QUOTA_WORDS = re.compile(r"exceeded your current quota", re.I)


def codes(exc: BaseException) -> set[str]:
    """The relay codes an error carries: its `code` and `type`, and, when a gateway in
    front replaced `code` by a number (or dropped it), the codes its message names."""
    if not isinstance(exc, StatusError):
        return set()
    found = {c for c in (exc.code, exc.type) if c}
    if exc.code is None or exc.code.isdigit():
        words = set(re.findall(r"[a-z_]+", exc.message.lower()))
        found |= words & KNOWN_CODES
        if _QUOTA_WORDS.search(exc.message):
            found.add("insufficient_quota")
    return found


def relayed_drop(exc: StatusError) -> bool:
    """A gateway in front answered for a connection to its upstream that broke: our
    request may have been done and billed further up."""
    return (exc.code is None or exc.code.isdigit()) and bool(_DROPPED.search(exc.message))


def classify(exc: RequestError) -> Verdict:
    if isinstance(exc, OutcomeUnknown):
        return Verdict.UNKNOWN
    if isinstance(exc, RouteUnfit):
        return Verdict.ROUTE
    if isinstance(exc, BadResponse):
        # A paid answer we cannot use: one more try, not the whole budget of them.
        return Verdict.TERMINAL if exc.repeated else Verdict.RETRY
    if isinstance(exc, PrepareFailed):  # never sent: a limit or a broken file stays so
        return Verdict.TERMINAL if exc.terminal else Verdict.RETRY
    if not isinstance(exc, StatusError):
        return Verdict.RETRY  # ConnectError
    found = codes(exc)
    if exc.status in (401, 403) or found & FATAL_CODES:
        return Verdict.FATAL
    if found & ROUTE_CODES or exc.status in (404, 501):
        return Verdict.ROUTE
    if found & MODEL_CODES:
        return Verdict.MODEL
    if found & TERMINAL_CODES:
        return Verdict.TERMINAL
    if exc.status in UNKNOWN_STATUSES or relayed_drop(exc):
        return Verdict.UNKNOWN
    if exc.status in RETRY_STATUSES or exc.status >= 500 or found & PERSISTENT_CODES:
        return Verdict.RETRY
    return Verdict.TERMINAL  # 400, 413, 422, ...


def final_verdict(exc: RequestError) -> Verdict:
    """The verdict once retries are spent: a model the gateway still says it does not
    offer is not offered (abort, exit 3)."""
    if isinstance(exc, StatusError) and codes(exc) & PERSISTENT_CODES:
        return Verdict.FATAL
    return classify(exc)


def route_not_implemented(exc: RequestError) -> bool:
    """The relay has no such endpoint at all (501 api_not_implemented): with no fallback
    for the model, going on is pointless for every model on this route."""
    return isinstance(exc, StatusError) and (
        exc.status == 501 or "api_not_implemented" in codes(exc))


def what_stops(exc: RequestError) -> str | None:
    """Once a task's attempts are over: "model" when no task of its model can succeed on
    this gateway (its other tasks stop), "run" when none can (abort), else None. A
    convert_request_failed without a fallback fails just its task: the relay also answers
    it for one request's odd field (DESIGN.md, "The API")."""
    verdict = classify(exc)
    if verdict is Verdict.MODEL:
        return "model"
    if verdict is Verdict.ROUTE:
        if route_not_implemented(exc):
            return "run"
        return None if "convert_request_failed" in codes(exc) else "model"
    if verdict is not Verdict.FATAL and final_verdict(exc) is Verdict.FATAL:
        return "run"
    return None
