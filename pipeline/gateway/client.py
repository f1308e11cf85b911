"""One HTTP attempt of one task over one route: send the route's request, read the answer.

Owns the attempt itself: headers (the key only to the gateway's own origin), the
timeout, turning transport failures and error answers into RequestErrors, and
fetching URL answers at once. What travels and how the answer reads is the
route's (gateway/routes/: images, chat, gemini); every image, whatever route
brought it, passes routes/base.py's `image_format` check.

It never retries, sleeps, writes files or touches the ledger: every failure
is raised as a RequestError for classify.py and retry.py to judge.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pipeline.config.settings import Provider
from pipeline.errors import BadResponse, ConnectError, OutcomeUnknown, RouteUnfit, StatusError
from pipeline.gateway.retry import parse_retry_after
from pipeline.gateway.routes import chat, gemini, images
from pipeline.gateway.routes.base import Decoded, data_url_bytes, image_format
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
    route: str = "images"  # the route that brought it
    # The answer came in another route's shape (a chat-shaped 200 on the images route):
    # kept, and the model should leave this route for its fallback.
    misrouted: bool = False


class Gateway:
    def __init__(self, session: aiohttp.ClientSession, provider: Provider, timeout: float):
        if not provider.base_url:
            raise ValueError("the provider has no base URL yet")
        self.session = session
        self.provider = provider
        self.host = urlsplit(provider.base_url).netloc
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(30.0, timeout))

    def _headers(self, idempotency_key: str) -> dict[str, str]:
        headers = {**self.provider.headers, "Idempotency-Key": idempotency_key}
        if self.provider.api_key:
            headers["Authorization"] = f"Bearer {self.provider.api_key.reveal()}"
        return headers

    async def edit(self, task: Task, idempotency_key: str, route: str | None = None) -> Answer:
        """One attempt of `task` over `route` (its configured one when None)."""
        way = ROUTES[route or task.route]
        with ExitStack() as files:
            sent = await way.request(task, self.provider, files)
            try:
                async with self.session.post(
                    sent.url, data=sent.body, headers={**self._headers(idempotency_key),
                                                       **sent.headers},
                    timeout=self.timeout,
                ) as response:
                    request_id = _request_id(response.headers)
                    body = await response.read()
                    if response.status != 200:
                        raise _status_error(response, body, request_id)
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
        try:
            return await self._answer(way, task, body, request_id)
        except BadResponse as exc:
            exc.status, exc.request_id = 200, request_id  # answered, so perhaps billed
            raise

    async def _answer(self, way: ModuleType, task: Task, body: bytes,
                      request_id: str | None) -> Answer:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise BadResponse(f"unreadable answer ({exc}): {body[:120]!r}") from exc
        misrouted = False
        try:
            decoded: Decoded = way.decode(payload, task)
        except RouteUnfit:
            # Another route's shape, perhaps paid for: its image is kept if it holds one,
            # and the model still leaves this route (Answer.misrouted).
            decoded, misrouted = _salvage(payload, task, way), True
        found = [await self._image_bytes(source) for source in decoded.sources]
        formats = [image_format(data) for data in found]
        return Answer(found, formats, decoded.usage, decoded.revised_prompt, request_id,
                      way.NAME, misrouted)

    async def _image_bytes(self, source: bytes | str) -> bytes:
        if isinstance(source, bytes):
            return source
        if source.startswith("data:"):
            return data_url_bytes(source)
        if source.startswith(("http://", "https://")):
            return await self._download(source)
        raise BadResponse(f"an answer's image URL is neither data: nor http(s): {source[:60]!r}")

    async def _download(self, url: str) -> bytes:
        # The key goes only to the gateway's own host, never to a CDN or a third party.
        same_host = urlsplit(url).netloc == self.host
        headers = self._headers("")
        headers.pop("Idempotency-Key")
        if not same_host:
            headers.pop("Authorization", None)
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout) as response:
                body = await response.read()
                if response.status != 200:
                    raise BadResponse(f"downloading the result failed: HTTP {response.status}")
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BadResponse(f"downloading the result failed: {exc}") from exc


def _salvage(payload: Any, task: Task, way: ModuleType) -> Decoded:
    """The images of an answer shaped for another route; RouteUnfit when none holds any."""
    for other in ROUTES.values():
        if other is way:
            continue
        try:
            return other.decode(payload, task)
        except (BadResponse, StatusError):
            continue
    raise RouteUnfit(f"the {way.NAME} route answered {task.model} in a shape no route reads: "
                     "this route cannot serve the model")


def _request_id(headers: Any) -> str | None:
    return headers.get("x-request-id") or headers.get("x-oneapi-request-id")


def _status_error(response: aiohttp.ClientResponse, body: bytes,
                  request_id: str | None) -> StatusError:
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except ValueError:
        pass  # HTML error pages from proxies: keep a short, readable excerpt
    message = error.get("message") or _excerpt(body) or response.reason or "no message"
    return StatusError(
        response.status, str(message),
        type=error.get("type"), code=_str_or_none(error.get("code")),
        request_id=request_id,
        retry_after=parse_retry_after(response.headers, now=time.time()),
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    if "<title>" in text:
        text = text.split("<title>", 1)[1].split("</title>", 1)[0]
    return " ".join(text.split())[:200]
