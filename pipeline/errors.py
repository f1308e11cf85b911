"""One error hierarchy for imgedit. Every message is for a person: what, where, what next.

    ImgeditError
    ├── InputError                 bad manifest, config or usage: exit 2, nothing sent
    │   ├── ManifestError          carries every Problem found, each with file:line and field
    │   └── ConfigError
    ├── LockHeld                   another run holds this manifest's lock: exit 75
    ├── RunAborted                 going on is pointless (bad key, no quota): exit 3
    └── RequestError               one HTTP attempt of one task went wrong
        ├── TransportError         no HTTP answer
        │   ├── ConnectError       nothing was sent: safe to retry
        │   └── OutcomeUnknown     upload done, answer lost (read timeout, dropped
        │                          connection): the gateway may have billed it
        ├── StatusError            an HTTP error answer, with the gateway's type/code/message
        ├── BadResponse            a 200 whose body is unreadable or whose bytes are no image
        │   └── RouteUnfit         a 200 shaped for another route: this route cannot serve
        │                          the model (the relay answered it some other way)
        └── PrepareFailed          never sent: an input could not be prepared for upload

Whether a RequestError is retried, terminal or fatal is decided in gateway/classify.py,
never here: these classes only describe what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.task import Location


class ImgeditError(Exception):
    """Base of every error imgedit raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input."""

    where: Location
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


class InputError(ImgeditError):
    exit_code = 2


class ManifestError(InputError):
    """`problems` holds every one; the message shows the first SHOWN, then a count."""

    SHOWN = 20  # a screenful: 184 lines of the same mistake help nobody

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [f"  {p}" for p in problems[: self.SHOWN]]
        if len(problems) > self.SHOWN:
            lines.append(f"  ... and {len(problems) - self.SHOWN} more (`imgedit validate "
                         "MANIFEST --json` lists every one)")
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} found; nothing was sent:\n" + "\n".join(lines))


class ConfigError(InputError):
    pass


class LockHeld(ImgeditError):
    exit_code = 75


class RunAborted(ImgeditError):
    exit_code = 3


class RequestError(ImgeditError):
    """One failed HTTP attempt. `kind` is a short stable label for the ledger."""

    kind = "request_error"


class TransportError(RequestError):
    kind = "transport"


class ConnectError(TransportError):
    kind = "connect"


class OutcomeUnknown(TransportError):
    kind = "unknown_outcome"


class BadResponse(RequestError):
    """The gateway answered 200, but not with usable images (the ledger keeps the 200)."""

    kind = "bad_response"
    status: int | None = None
    request_id: str | None = None
    usage: dict[str, Any] | None = None  # what the answer said it used: it may be billed
    repeated: bool = False  # this task's second unusable answer in a row of attempts


class RouteUnfit(BadResponse):
    """A 200 that is not this route's answer (chat-shaped, or foreign, on the images route).
    Sending it again on the same route would pay again for the same useless answer."""

    kind = "route_unfit"


class PrepareFailed(RequestError):
    """An input could not be prepared (`prepare:`), or the prepared file breaks the model's
    limits: nothing was sent. `terminal`: the same input would fail the same way (a file
    that does not decode, a limit); not so when the disk refused the prepared file."""

    kind = "prepare"

    def __init__(self, message: str, *, terminal: bool = True):
        super().__init__(message)
        self.terminal = terminal


class StatusError(RequestError):
    kind = "status"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said
        label = " ".join(x for x in (type, code) if x)
        super().__init__(f"HTTP {status}{f' {label}' if label else ''}: {message}")
