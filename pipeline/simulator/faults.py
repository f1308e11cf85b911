"""What the simulator is told to do wrong on purpose: its options, faults, 429s and latency.

It owns `SimulatorOptions` (the `simulator:` mapping of a provider and the
flags of `imgedit simulate`), the fault names and their answers, the seeded
choice of which request gets which fault, the latency distributions, and
the gateway's error shape `{"error": {"message", "type", "param", "code"}}`.
The request limit behind the simulator's other 429s is `ratelimit.py`.
It must never touch the network, and never use a clock or a random source it
was not handed: the same seed and the same request order give the same faults,
so a failing scenario replays exactly.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from aiohttp import web

RESPONSE_MODES = ("auto", "b64", "url", "data-url")

# Each fault, and the symptom a client sees.
FAULTS = {
    "500": "HTTP 500 server_error (JSON)",
    "502": "HTTP 502 bad gateway (JSON)",
    "503": "HTTP 503 upstream overloaded (JSON)",
    "504": "HTTP 504 gateway timeout (JSON)",
    "html502": "HTTP 502 with nginx's HTML page",
    "429": "HTTP 429 rate_limit_exceeded with Retry-After: 1 and retry-after-ms: 1000",
    "429-bare": "HTTP 429 rate_limit_exceeded without any retry-after header",
    "quota": "HTTP 429 insufficient_quota",
    "drop": "the upload is read, then the connection closes without an answer",
    "slow": "a normal answer, sent after `slow_seconds`",
    "malformed": "HTTP 200 whose body is not JSON",
    "notimage": "HTTP 200 whose b64_json decodes to bytes that are no image",
    "moderation": "HTTP 400 moderation_blocked",
    "convert": "HTTP 500 convert_request_failed: the relay could not translate the request",
    "401": "HTTP 401 invalid_api_key: the upstream refused the relay's key, passed through",
    # The relay's own answers (new-api types/error.go codes; controller/relay.go statuses).
    "sensitive_words_detected": "HTTP 500 sensitive_words_detected: the relay's word filter",
    "model_price_error": "HTTP 400 model_price_error: the relay has no price for the model",
    "model_not_found": "HTTP 503 model_not_found: no channel for the model (all disabled)",
    "api_not_implemented": "HTTP 501 api_not_implemented",
    "bad_response_body": "HTTP 500 bad_response_body: the upstream's 200 was unreadable",
    "insufficient_user_quota": "HTTP 403 insufficient_user_quota: the relay token is spent",
    "524": "HTTP 524 with Cloudflare's HTML page: the origin took too long",
}

# Faults the gateway itself answers before any upstream work: they come at once,
# the others after the request's latency, as a real upstream failure would.
IMMEDIATE_FAULTS = frozenset({"401", "429", "429-bare", "quota", "sensitive_words_detected",
                              "model_price_error", "model_not_found", "api_not_implemented",
                              "insufficient_user_quota"})

NOT_AN_IMAGE = b"upstream said: this is not an image\n"

HTML_524 = """<!DOCTYPE html>
<html><head><title>api.example.com | 524: A timeout occurred</title></head>
<body><h1>A timeout occurred</h1><p>Error code 524</p></body></html>
"""

HTML_502 = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

# Fault -> (status, message, type, code) of its JSON error.
_FAULT_ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "500": (500, "The server had an error while processing your request. Sorry about that!",
            "server_error", None),
    "502": (502, "Bad gateway: the upstream answered nothing usable.",
            "server_error", "bad_gateway"),
    "503": (503, "The upstream is overloaded with other requests. Please retry later.",
            "server_error", "overloaded"),
    "504": (504, "Gateway timeout: the upstream did not answer in time.",
            "server_error", "timeout"),
    "429": (429, "Rate limit reached for requests. Please try again in 1s.",
            "rate_limit_exceeded", "rate_limit_exceeded"),
    "quota": (429, "You exceeded your current quota, please check your plan and billing details.",
              "insufficient_quota", "insufficient_quota"),
    "moderation": (400, "Your request was rejected by the safety system.",
                   "invalid_request_error", "moderation_blocked"),
    # The relay (new-api) answers 500 when it cannot translate a request for the upstream;
    # sending the same request again fails the same way.
    "convert": (500, "failed to convert request: unsupported field for this channel",
                "new_api_error", "convert_request_failed"),
    "401": (401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
}
_FAULT_ERRORS["429-bare"] = _FAULT_ERRORS["429"]
# The relay's own errors: type new_api_error, " (request id: ...)" after the message.
_RELAY_ERRORS: dict[str, tuple[int, str, str, str]] = {
    # controller/relay.go: CheckSensitiveText -> NewError(sensitive_words_detected), 500.
    "sensitive_words_detected": (500, "sensitive words detected", "new_api_error",
                                 "sensitive_words_detected"),
    # controller/relay.go: ModelPriceHelper failed -> 400 model_price_error.
    "model_price_error": (400, "model gpt-image-1 ratio or price not set, please set or start "
                          "self-use mode", "new_api_error", "model_price_error"),
    # middleware/distributor.go: no channel (also while all are auto-disabled) -> 503.
    "model_not_found": (503, "No available channel for model gpt-image-1 under group default "
                        "(distributor)", "new_api_error", "model_not_found"),
    # controller/relay.go RelayNotImplemented.
    "api_not_implemented": (501, "API not implemented", "new_api_error", "api_not_implemented"),
    # relay/channel/openai/relay-openai.go: an upstream 200 that does not unmarshal.
    "bad_response_body": (500, "invalid character '<' looking for beginning of value",
                          "openai_error", "bad_response_body"),
    # middleware/auth.go tokenAuthErrorResponse: ErrTokenExhausted -> 403.
    "insufficient_user_quota": (403, "token quota is not enough, token remain quota: 0",
                                "new_api_error", "insufficient_user_quota"),
}


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulator behaves. Every field is checked here, so a typo fails at once."""

    faults: Mapping[str, float] = field(default_factory=dict)  # fault -> probability
    # fault -> N: each Idempotency-Key's first N requests get it, in the order given
    # (requests without a key share one count).
    fail_first: Mapping[str, int] = field(default_factory=dict)
    # substring -> a fault for every request whose prompt holds it, or a fail_first-shaped
    # {fault: N} for just the first attempts of each such task (then it is answered).
    fault_by_prompt: Mapping[str, str | Mapping[str, int]] = field(default_factory=dict)
    seed: int = 0
    latency: float | str = 0.0  # seconds, "uniform:LOW,HIGH" or "normal:MEAN,SD"
    slow_seconds: float = 5.0
    rate_limit: str | None = None  # "30/min", "2/s": a sliding window, see ratelimit.py
    rate_limit_retry_after: bool = False  # its 429s say when to retry (the relay's never do)
    response: str = "auto"  # auto | b64 | url | data-url
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    # The relay token it accepts (compared as new-api's middleware/auth.go does).
    api_key: str = "sk-simulator"
    # Gemini models on the images route: "convert" answers 500 convert_request_failed (the
    # relay's code); "chat" answers chat-shaped, as its newest code does for edits.
    gemini_images: str = "convert"

    def __post_init__(self) -> None:
        # YAML reads `500: 0.1` with an int key, and fault names are strings.
        for name in ("faults", "fail_first", "fault_by_prompt"):
            value = {str(k): _str_keys(v) for k, v in dict(getattr(self, name) or {}).items()}
            object.__setattr__(self, name, MappingProxyType(value))
        check_faults(self.faults, self.fail_first, self.fault_by_prompt)
        parse_latency(self.latency)
        if self.rate_limit is not None:
            parse_rate_limit(self.rate_limit)
        if self.gemini_images not in ("convert", "chat"):
            raise ValueError(f"gemini_images: {self.gemini_images!r} is not convert or chat")
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise ValueError("api_key: the simulator needs a token to accept")
        if self.response not in RESPONSE_MODES:
            raise ValueError(f"response: {self.response!r} is not one of {RESPONSE_MODES}")
        if not isinstance(self.slow_seconds, int | float) or self.slow_seconds < 0:
            raise ValueError(f"slow_seconds: {self.slow_seconds!r} is not seconds >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SimulatorOptions:
        """From a provider's `simulator:` mapping; an unknown key is a ValueError naming it."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values or {}:
            if key not in known:
                raise ValueError(f"unknown simulator option {key!r}; known: {', '.join(known)}")
        return cls(**dict(values or {}))


def _str_keys(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


def check_faults(
    faults: Mapping[str, Any], fail_first: Mapping[str, Any], by_prompt: Mapping[str, Any]
) -> None:
    """Raise ValueError, naming the option, for any fault setting that cannot work."""
    first_by_prompt = [v for v in by_prompt.values() if isinstance(v, Mapping)]
    prompt_names = [v for v in by_prompt.values() if not isinstance(v, Mapping)]
    prompt_names += [name for plan in first_by_prompt for name in plan]
    named = {"faults": faults, "fail_first": fail_first, "fault_by_prompt": prompt_names}
    for option, names in named.items():
        for name in names:
            if name not in FAULTS:
                raise ValueError(f"{option}: unknown fault {name!r}; known: {', '.join(FAULTS)}")
    for name, p in faults.items():
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"faults: {name!r} probability {p!r} is not a number from 0 to 1")
    if sum(faults.values()) > 1 + 1e-9:
        raise ValueError("faults: the probabilities add up to more than 1")
    counts = [("fail_first", fail_first)] + [("fault_by_prompt", v) for v in first_by_prompt]
    for option, plan in counts:
        for name, count in plan.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{option}: {name!r} count {count!r} is not a whole number >= 0")


class Ticket(NamedTuple):
    """What a request drew on arrival, before its body was read."""

    attempt: int  # 1 for a key's first request
    roll: float


class FaultPlan:
    """Which request gets which fault: by prompt, then a key's first attempts, then at random.

    One random number is drawn per request on arrival, whatever it is used for,
    so the n-th request of a run meets the same luck on every replay.
    """

    def __init__(
        self,
        faults: Mapping[str, float],
        fail_first: Mapping[str, int],
        by_prompt: Mapping[str, str | Mapping[str, int]],
        seed: int,
    ):
        self._faults = dict(faults)
        self._fail_first = dict(fail_first)
        self._by_prompt = dict(by_prompt)
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = random.Random(self._seed)
        self._attempts: Counter[str] = Counter()  # requests without a key share the "" count

    def arrive(self, idempotency_key: str | None) -> Ticket:
        key = idempotency_key or ""
        self._attempts[key] += 1
        return Ticket(self._attempts[key], self._rng.random())

    def choose(self, ticket: Ticket, prompt: str) -> str | None:
        for substring, fault in self._by_prompt.items():
            if substring in prompt:
                return fault if isinstance(fault, str) else _nth(fault, ticket.attempt)
        if first := _nth(self._fail_first, ticket.attempt):
            return first
        bound = 0.0
        for fault, p in self._faults.items():
            bound += p
            if ticket.roll < bound:
                return fault
        return None


def _nth(fail_first: Mapping[str, int], attempt: int) -> str | None:
    """The fault a key's `attempt`-th request gets from a {fault: N} plan, in its order."""
    for fault, count in fail_first.items():
        if attempt <= count:
            return fault
        attempt -= count
    return None


def error_response(
    status: int,
    message: str,
    *,
    type: str,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The gateway's error answer, in OpenAI's shape."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def retry_headers(seconds: float) -> dict[str, str]:
    """Both spellings OpenAI uses: milliseconds, and whole seconds rounded up."""
    return {"retry-after-ms": str(math.ceil(seconds * 1000)),
            "Retry-After": str(math.ceil(seconds))}


def fault_response(name: str) -> web.Response:
    """The answer for a fault that is an HTTP answer (anything but drop and slow)."""
    if name == "html502":
        return web.Response(status=502, text=HTML_502, content_type="text/html")
    if name == "524":
        return web.Response(status=524, text=HTML_524, content_type="text/html")
    if name in _RELAY_ERRORS:
        status, text, kind, relay_code = _RELAY_ERRORS[name]
        rid = secrets.token_hex(16)
        return error_response(status, f"{text} (request id: {rid})", type=kind, code=relay_code,
                              param="")
    if name == "malformed":
        # Cut off mid-answer, as a proxy that gave up halfway would.
        cut = '{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgo'
        return web.Response(text=cut, content_type="application/json")
    if name == "notimage":
        item = {"b64_json": base64.b64encode(NOT_AN_IMAGE).decode()}
        return web.json_response({"created": int(time.time()), "data": [item]})
    status, message, type_, code = _FAULT_ERRORS[name]
    headers = retry_headers(1.0) if name == "429" else None
    return error_response(status, message, type=type_, code=code, headers=headers)


_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0}


def parse_rate_limit(spec: str) -> tuple[float, float]:
    """'30/min' -> (30.0, 60.0): requests allowed per period of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*", str(spec))
    if not match or match[2] not in _PERIODS or float(match[1]) <= 0:
        raise ValueError(f"rate_limit: {spec!r} is not like '30/min' or '2/s'")
    return float(match[1]), _PERIODS[match[2]]


def parse_latency(spec: float | str) -> Callable[[random.Random], float]:
    """Seconds of work per request: a number, 'uniform:LOW,HIGH' or 'normal:MEAN,SD' (cut at 0)."""
    problem = f"latency: {spec!r} is not seconds, 'uniform:LOW,HIGH' or 'normal:MEAN,SD'"
    kind, _, args = str(spec).strip().partition(":")
    try:
        if not args:
            seconds = float(kind)
            if not 0 <= seconds < math.inf:
                raise ValueError(problem)
            return lambda rng: seconds
        a, b = (float(x) for x in args.split(","))
    except ValueError:
        raise ValueError(problem) from None
    if kind == "uniform" and 0 <= a <= b:
        return lambda rng: rng.uniform(a, b)
    if kind == "normal" and b >= 0:
        return lambda rng: max(0.0, rng.gauss(a, b))
    raise ValueError(problem)
