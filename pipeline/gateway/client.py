"""One HTTP attempt of one task over one route: send the route's request, read the answer.

Owns the attempt itself: headers (the key only to the gateway's own origin), the
timeout, turning transport failures and error answers into RequestErrors. What
travels and where each image sits in the answer is the route's (gateway/routes/:
images, chat, gemini); every answer, whatever its route, is then read by
answer.py: bounded, exactly `n` images, URLs fetched under download.py's rules,
each image decoded whole. The POST follows no redirect. Every message it
raises is cleaned (config/redact.py) of the key, control characters and
excess length before anyone stores or prints it.

It never retries, sleeps, writes files or touches the ledger: every failure
is raised as a RequestError for classify.py and retry.py to judge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pipeline.config.models import Models
from pipeline.config.redact import clean
from pipeline.config.settings import Provider
from pipeline.errors import (
    BadResponse,
    ConnectError,
    OutcomeUnknown,
    PrepareFailed,
    RequestError,
    RouteUnfit,
    StatusError,
)
from pipeline.gateway.answer import (
    DEFAULT_MAX_BYTES,
    MB,
    TEXT_CHARS,
    checked_images,
    parse_json,
    read_capped,
    take,
    usage_of,
)
from pipeline.gateway.checking import Checking
from pipeline.gateway.download import Downloads
from pipeline.gateway.retry import parse_retry_after
from pipeline.gateway.routes import chat, gemini, images
from pipeline.gateway.routes.base import Decoded
from pipeline.gateway.routes.images import IN_MEMORY_MAX, sends_response_format
from pipeline.task import Task

__all__ = ["IN_MEMORY_MAX", "ROUTES", "Answer", "Gateway", "sends_response_format"]
ROUTES: dict[str, ModuleType] = {m.NAME: m for m in (images, chat, gemini)}


@dataclass(frozen=True)
class Answer:
    images: list[bytes]
    formats: list[str]  # the real format of each image: png, jpeg or webp
    usage: dict[str, Any] | None
    revised_prompt: str | None
    request_id: str | None
    notes: tuple[str, ...] = ()  # what the answer held that was ignored (extras, bad usage)
    route: str = "images"  # the route that brought it
    # The answer came in another route's shape (a chat-shaped 200 on the images route):
    # kept, and the model should leave this route for its fallback.
    misrouted: bool = False


class Gateway:
    def __init__(self, session: aiohttp.ClientSession, provider: Provider, timeout: float,
                 models: Models | None = None):
        if not provider.base_url:
            raise ValueError("the provider has no base URL yet")
        self.session = session
        self.provider = provider
        self.models = models
        self.host = urlsplit(provider.base_url).netloc
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(30.0, timeout))
        self.downloads = Downloads(session, provider.base_url, self._download_headers,
                                   self.timeout)
        self.checking = Checking()  # where the answers' images are checked
        key = provider.api_key.reveal() if provider.api_key else ""
        self._secrets = [key] if key else []

    def _headers(self, idempotency_key: str) -> dict[str, str]:
        headers = {**self.provider.headers, "Idempotency-Key": idempotency_key}
        if self.provider.api_key:
            headers["Authorization"] = f"Bearer {self.provider.api_key.reveal()}"
        return headers

    def _download_headers(self) -> dict[str, str]:
        headers = self._headers("")
        headers.pop("Idempotency-Key")
        return headers

    def max_answer_bytes(self, model: str) -> int:
        spec = self.models.get(model) if self.models is not None else None
        return int(spec.max_answer_mb * MB) if spec is not None else DEFAULT_MAX_BYTES

    async def edit(self, task: Task, idempotency_key: str, route: str | None = None,
                   ready: Callable[[], Awaitable[object]] | None = None,
                   answered: Callable[[], object] | None = None) -> Answer:
        """One attempt of `task` over `route` (its configured one when None). `ready` is
        awaited once the body is built, right before the request is written: a pacer's
        turn taken there is the spacing the server sees. `answered` is called once the
        gateway's answer is read whole, before its images are checked: from then on the
        request holds no place at the gateway."""
        try:
            return await self._edit(task, idempotency_key, ROUTES[route or task.route],
                                    ready, answered)
        except RequestError as exc:
            self._clean(exc)
            raise

    def _clean(self, exc: RequestError) -> None:
        """The one place a gateway's words enter: cut, stripped and redacted, key included."""
        exc.args = tuple(clean(a, self._secrets) if isinstance(a, str) else a
                         for a in exc.args)
        if isinstance(exc, StatusError):
            exc.message = clean(exc.message, self._secrets)
        for name in ("request_id", "code", "type"):
            value = getattr(exc, name, None)
            if isinstance(value, str):
                setattr(exc, name, clean(value, self._secrets, limit=200))

    async def _edit(self, task: Task, idempotency_key: str, way: ModuleType,
                    ready: Callable[[], Awaitable[object]] | None,
                    answered: Callable[[], object] | None) -> Answer:
        limit = self.max_answer_bytes(task.model)
        with ExitStack() as files:
            try:
                sent = await way.request(task, self.provider, files)
            except OSError as exc:  # gone or unreadable since the check pass: nothing sent
                raise PrepareFailed(f"cannot read an input for the request: {exc}",
                                    terminal=False) from exc
            if ready is not None:
                await ready()
            try:
                # No redirect: following one would send the images, the prompt and the
                # key to wherever the answer points.
                async with self.session.post(
                    sent.url, data=sent.body, headers={**self._headers(idempotency_key),
                                                       **sent.headers},
                    timeout=self.timeout, allow_redirects=False,
                ) as response:
                    request_id = _request_id(response.headers, self._secrets)
                    if response.status != 200:
                        raise await _status_error(response, limit, request_id)
                    try:
                        body = await read_capped(response, limit)
                    except BadResponse as exc:
                        exc.status, exc.request_id = 200, request_id
                        raise
            except aiohttp.ClientConnectorError as exc:
                raise ConnectError(f"cannot connect to {self.host}: {exc.os_error}") from exc
            except aiohttp.ConnectionTimeoutError as exc:
                raise ConnectError(f"connecting to {self.host} timed out") from exc
            except TimeoutError as exc:
                raise OutcomeUnknown(
                    f"no answer within {self.timeout.total:g} s after the upload") from exc
            except aiohttp.ClientError as exc:
                # The connection broke after we began sending: we cannot know
                # whether the gateway got (and billed) the request.
                raise OutcomeUnknown(f"connection lost: {exc}") from exc
        if answered is not None:
            answered()
        try:
            return await self._answer(way, task, body, request_id, limit)
        except BadResponse as exc:
            exc.status, exc.request_id = 200, request_id  # answered, so perhaps billed
            raise

    async def _answer(self, way: ModuleType, task: Task, body: bytes,
                      request_id: str | None, limit: int) -> Answer:
        """The route finds the images in the answer; answer.py checks them, whatever the
        route: exactly `n`, each within `limit`, each decoded whole."""
        payload = parse_json(body)
        misrouted = False
        try:
            decoded: Decoded = way.decode(payload, task, limit)
        except RouteUnfit:
            # Another route's shape, perhaps paid for: its image is kept if it holds one,
            # and the model still leaves this route (Answer.misrouted).
            decoded, misrouted = _salvage(payload, task, way, limit), True
        usage, notes = usage_of(decoded.usage)
        notes = decoded.notes + notes
        try:
            sources = take(decoded.sources, task.n, notes)
            found, formats = await checked_images(
                sources, n=task.n, max_bytes=limit,
                fetch=lambda url: self.downloads.fetch(url, limit), check=self.checking.check)
        except BadResponse as exc:
            exc.usage = usage
            raise
        revised = decoded.revised_prompt
        return Answer(found, formats, usage,
                      None if revised is None else clean(revised, self._secrets,
                                                         limit=TEXT_CHARS),
                      request_id, tuple(clean(note, self._secrets) for note in notes),
                      way.NAME, misrouted)


def _salvage(payload: Any, task: Task, way: ModuleType, limit: int) -> Decoded:
    """The images of an answer shaped for another route; RouteUnfit when none holds any."""
    for other in ROUTES.values():
        if other is way:
            continue
        try:
            return other.decode(payload, task, limit)
        except (BadResponse, StatusError):
            continue
    raise RouteUnfit(f"the {way.NAME} route answered {task.model} in a shape no route reads: "
                     "this route cannot serve the model")


def _request_id(headers: Any, secrets: list[str]) -> str | None:
    found = headers.get("x-request-id") or headers.get("x-oneapi-request-id")
    return clean(found, secrets, limit=200) if found else None


async def _status_error(response: aiohttp.ClientResponse, limit: int,
                        request_id: str | None) -> StatusError:
    if response.status in (301, 302, 303, 307, 308):
        where = clean(response.headers.get("Location", "nowhere"), limit=200)
        return StatusError(response.status, f"the gateway redirected the request to {where}; "
                           "not followed (set base_url to the address it should use)",
                           request_id=request_id)
    error: dict[str, Any] = {}
    body = await read_capped(response, limit, head_only=True)  # a huge one: its head
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except (ValueError, RecursionError):
        pass  # HTML error pages from proxies: keep a short, readable excerpt
    message = error.get("message") or _excerpt(body) or response.reason or "no message"
    if not isinstance(message, str):
        message = f"(the error's message is a JSON {type(message).__name__}, not text)"
    return StatusError(
        response.status, str(message),
        type=_str_or_none(error.get("type")), code=_str_or_none(error.get("code")),
        request_id=request_id,
        retry_after=parse_retry_after(response.headers, now=time.time()),
    )


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    if "<title>" in text:
        text = text.split("<title>", 1)[1].split("</title>", 1)[0]
    return " ".join(text.split())[:200]
