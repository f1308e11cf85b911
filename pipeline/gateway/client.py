"""One HTTP attempt of one task: build the multipart request, send it, decode the answer.

Owns the wire format ("The API" in DESIGN.md): `image` for one file, repeated
`image[]` for several, each part with its real content type, `model` always
sent, `response_format` never sent to gpt-image models. Answers come back as
`b64_json`, a `url` (downloaded at once under download.py's rules) or a
`data:` URL, and are read by answer.py: bounded, checked against the schema,
each image decoded whole. The POST follows no redirect. Every message it
raises is cleaned (config/redact.py) of the key, control characters and
excess length before anyone stores or prints it.

It never retries, sleeps, writes files or touches the ledger: every failure
is raised as a RequestError for retry.py to judge.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import aiohttp
import anyio

from pipeline.config.models import Models, sniff_format
from pipeline.config.redact import clean
from pipeline.config.settings import Provider
from pipeline.errors import (
    BadResponse,
    ConnectError,
    OutcomeUnknown,
    RequestError,
    StatusError,
)
from pipeline.gateway.answer import (
    DECODING_AT_ONCE,
    DEFAULT_MAX_BYTES,
    MB,
    decode_images_answer,
    read_capped,
)
from pipeline.gateway.download import Downloads
from pipeline.gateway.retry import parse_retry_after
from pipeline.task import IMAGE_FORMATS, Task

# Bytes: an input up to this size is read into memory, not streamed; a form whose inputs
# total at most this is sent as one body.
IN_MEMORY_MAX = 2 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    images: list[bytes]
    formats: list[str]  # the real format of each image: png, jpeg or webp
    usage: dict[str, Any] | None
    revised_prompt: str | None
    request_id: str | None
    notes: tuple[str, ...] = ()  # what the answer held that was ignored (extras, bad usage)


def sends_response_format(model: str) -> bool:
    return not model.startswith("gpt-image")  # gpt-image models answer 400 to it


class Gateway:
    def __init__(self, session: aiohttp.ClientSession, provider: Provider, timeout: float,
                 models: Models | None = None):
        if not provider.base_url:
            raise ValueError("the provider has no base URL yet")
        self.session = session
        self.provider = provider
        self.models = models
        self.url = f"{provider.base_url}/images/edits"
        self.host = urlsplit(provider.base_url).netloc
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(30.0, timeout))
        self.downloads = Downloads(session, provider.base_url, self._download_headers,
                                   self.timeout)
        self.decoding = anyio.CapacityLimiter(DECODING_AT_ONCE)
        key = provider.api_key.reveal() if provider.api_key else ""
        self._secrets = [key] if key else []

    def _headers(self, idempotency_key: str) -> dict[str, str]:
        headers = {**self.provider.headers, "Idempotency-Key": idempotency_key}
        if self.provider.api_key:
            headers["Authorization"] = f"Bearer {self.provider.api_key.reveal()}"
        return headers

    async def _body(self, task: Task, files: ExitStack) -> tuple[Any, dict[str, str]]:
        """The request body, and its Content-Type header when we set it ourselves.

        Small inputs (IN_MEMORY_MAX in all): the whole form as one bytes object, sent in
        one write. Handed the form itself, aiohttp writes every part on its own, a dozen
        sends a request, each a chance for the writer threads to take the GIL from the
        event loop. Otherwise the form, and aiohttp streams large files from disk.
        """
        form, in_memory = self._form(task, files)
        if in_memory > IN_MEMORY_MAX:
            return form, {}
        payload = form()
        return await payload.as_bytes(), {"Content-Type": payload.content_type}

    def _form(self, task: Task, files: ExitStack) -> tuple[aiohttp.FormData, int]:
        """The form, and the bytes of its files read into memory (over IN_MEMORY_MAX when
        one is streamed). Files are opened anew for every attempt, so a retry never sends
        a half-read body."""
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("model", task.model)
        form.add_field("prompt", task.prompt)
        name = self.provider.image_field if len(task.images) == 1 else self.provider.images_field
        parts = [(name, path) for path in task.images]
        if task.mask is not None:
            parts.append(("mask", task.mask))
        in_memory = 0
        for field, path in parts:
            body, content_type = _file_part(files.enter_context(path.open("rb")))
            in_memory += len(body) if isinstance(body, bytes) else IN_MEMORY_MAX + 1
            form.add_field(field, body, filename=path.name, content_type=content_type)
        for key, value in task.fields.items():
            if key == "model" or value is None:
                continue
            if key == "response_format" and not sends_response_format(task.model):
                continue
            form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
        return form, in_memory

    def _download_headers(self) -> dict[str, str]:
        headers = self._headers("")
        headers.pop("Idempotency-Key")
        return headers

    def max_answer_bytes(self, model: str) -> int:
        spec = self.models.get(model) if self.models is not None else None
        return int(spec.max_answer_mb * MB) if spec is not None else DEFAULT_MAX_BYTES

    async def edit(self, task: Task, idempotency_key: str,
                   ready: Callable[[], Awaitable[object]] | None = None) -> Answer:
        """`ready` is awaited once the body is built, right before the request is written:
        a pacer's turn taken there is the spacing the server sees."""
        try:
            return await self._edit(task, idempotency_key, ready)
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

    async def _edit(self, task: Task, idempotency_key: str,
                    ready: Callable[[], Awaitable[object]] | None) -> Answer:
        limit = self.max_answer_bytes(task.model)
        with ExitStack() as files:
            upload, content_type = await self._body(task, files)
            if ready is not None:
                await ready()
            try:
                # No redirect: following one would send the images, the prompt and the
                # key to wherever the answer points.
                async with self.session.post(
                    self.url, data=upload, headers={**self._headers(idempotency_key),
                                                  **content_type},
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
        try:
            images = await decode_images_answer(
                body, n=task.n, max_bytes=limit,
                fetch=lambda url: self.downloads.fetch(url, limit), limiter=self.decoding)
        except BadResponse as exc:
            exc.status, exc.request_id = 200, request_id  # answered, so perhaps billed
            raise
        revised = images.revised_prompt
        return Answer(images.images, images.formats, images.usage,
                      None if revised is None else clean(revised, self._secrets, limit=None),
                      request_id, tuple(clean(note, self._secrets) for note in images.notes))


def _file_part(file: BinaryIO) -> tuple[bytes | BinaryIO, str]:
    """The part's body and its real content type (sniffed, not guessed from the name).
    A small file goes as bytes: one write instead of a thread hop per chunk; a large one
    is streamed from disk, so big inputs times the concurrency never fill memory."""
    content_type = IMAGE_FORMATS.get(sniff_format(file.read(16)) or "",
                                     "application/octet-stream")
    file.seek(0)
    if os.fstat(file.fileno()).st_size <= IN_MEMORY_MAX:
        return file.read(), content_type
    return file, content_type


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
