"""One HTTP attempt of one task: build the multipart request, send it, decode the answer.

Owns the wire format ("The API" in DESIGN.md): `image` for one file, repeated
`image[]` for several, each part with its real content type, `model` always
sent, `response_format` never sent to gpt-image models. Answers come back as
`b64_json`, a `url` (downloaded at once, with the key only for the gateway's
own host) or a `data:` URL; the bytes are verified to be an image.

It never retries, sleeps, writes files or touches the ledger: every failure
is raised as a RequestError for retry.py to judge.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from pipeline.config.models import sniff_format
from pipeline.config.settings import Provider
from pipeline.errors import BadResponse, ConnectError, OutcomeUnknown, StatusError
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


def sends_response_format(model: str) -> bool:
    return not model.startswith("gpt-image")  # gpt-image models answer 400 to it


class Gateway:
    def __init__(self, session: aiohttp.ClientSession, provider: Provider, timeout: float):
        if not provider.base_url:
            raise ValueError("the provider has no base URL yet")
        self.session = session
        self.provider = provider
        self.url = f"{provider.base_url}/images/edits"
        self.host = urlsplit(provider.base_url).netloc
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(30.0, timeout))

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

    async def edit(self, task: Task, idempotency_key: str,
                   ready: Callable[[], Awaitable[object]] | None = None) -> Answer:
        """`ready` is awaited once the body is built, right before the request is written:
        a pacer's turn taken there is the spacing the server sees."""
        with ExitStack() as files:
            upload, content_type = await self._body(task, files)
            if ready is not None:
                await ready()
            try:
                async with self.session.post(
                    self.url, data=upload, headers={**self._headers(idempotency_key),
                                                  **content_type},
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
            return await self._decode(body, request_id)
        except BadResponse as exc:
            exc.status, exc.request_id = 200, request_id  # answered, so perhaps billed
            raise

    async def _decode(self, body: bytes, request_id: str | None) -> Answer:
        try:
            payload = json.loads(body)
            items = payload["data"]
            if not isinstance(items, list) or not items:
                raise ValueError("no images in 'data'")
        except (ValueError, KeyError, TypeError) as exc:
            raise BadResponse(f"unreadable answer ({exc}): {body[:120]!r}") from exc
        images = [await self._image_bytes(item) for item in items]
        formats = [_verified_format(data) for data in images]
        revised = next((i.get("revised_prompt") for i in items if i.get("revised_prompt")), None)
        return Answer(images, formats, payload.get("usage"), revised, request_id)

    async def _image_bytes(self, item: dict[str, Any]) -> bytes:
        if item.get("b64_json"):
            return _b64(item["b64_json"])
        url = item.get("url") or ""
        if url.startswith("data:"):
            return _b64(url.partition(",")[2])
        if url.startswith(("http://", "https://")):
            return await self._download(url)
        raise BadResponse("an answer item has neither b64_json nor a url")

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


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadResponse(f"b64_json is not valid base64: {exc}") from exc


def _verified_format(data: bytes) -> str:
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise BadResponse(f"the answer's bytes are not an image: {data[:16]!r}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise BadResponse(f"the answer's {fmt} image is corrupt: {exc}") from exc
    return fmt


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
