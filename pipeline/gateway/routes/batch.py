"""The batch route: edits as JSONL lines for OpenAI's Batch API, and the API's calls.

Owns the line (`{"custom_id", "method": "POST", "url": "/v1/images/edits",
"body"}` with a JSON edit body: images and mask as `image_url` data URLs, or
as uploaded file ids when an image is large), the `custom_id` (task id and
fingerprint), splitting input files at 50,000 lines and 200 MB, and the
calls: upload a file, create / retrieve / list batches, stream a file's
lines (nothing here cancels a batch: the provider's dashboard does, and the
next run sends again what it never ran). Every answer is parsed and bounded
here: a batch object with wrong types, a line that is not JSON, a line longer
than any answer could be, is a BadResponse or a skipped line, never a crash.
Answers inside output lines are decoded by `decode_answer`, the one door to the
live answer's checks.

It never records anything and never decides what to do with a result: that is
run/batch.py's.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pipeline.config.models import Models, sniff_format
from pipeline.config.redact import clean
from pipeline.config.settings import Provider
from pipeline.errors import BadResponse, ConnectError, OutcomeUnknown, RequestError, StatusError
from pipeline.gateway.answer import MAX_DEPTH, decode_images_answer, parse_json, read_capped
from pipeline.gateway.client import Answer, Gateway, _status_error, sends_response_format
from pipeline.task import IMAGE_FORMATS, Task

ENDPOINT = "/v1/images/edits"
MAX_LINES = 50_000  # OpenAI's limits for one batch input file
MAX_FILE_BYTES = 200 * 1024 * 1024
INLINE_MAX = 4 * 1024 * 1024  # an image above this goes as an uploaded file id, not inline
LINE_MAX = 256 * 1024 * 1024  # an output line longer than this is no answer we can trust
CALL_MAX = 16 * 1024 * 1024  # a batch object, a file object, a page of the list
STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "expired",
            "cancelling", "cancelled")
TOKEN_KEY = "imgedit_token"
ID = re.compile(r"[A-Za-z0-9_-]{1,200}")  # the metadata key that ties a batch to its ledger row


def custom_id(task_id: str, fingerprint: str) -> str:
    return f"{task_id}@{fingerprint}"


def split_custom_id(text: str) -> tuple[str, str] | None:
    """(task id, fingerprint); None for a custom_id we did not make."""
    task_id, at, fingerprint = text.rpartition("@")
    if not at or not task_id or len(fingerprint) != 64:
        return None
    return task_id, fingerprint


def _sniffed_type(data: bytes) -> str:
    return IMAGE_FORMATS.get(sniff_format(data[:16]) or "", "image/png")


ImageUploader = Callable[[Path], Awaitable[str]]


async def edit_body(task: Task, upload: ImageUploader) -> dict[str, Any]:
    """The JSON edit body of one task: the live request's fields, images by reference."""

    async def ref(path: Path) -> dict[str, str]:
        if path.stat().st_size > INLINE_MAX:
            return {"file_id": await upload(path)}
        data = path.read_bytes()
        return {"image_url": f"data:{_sniffed_type(data)};base64,"
                             f"{base64.b64encode(data).decode()}"}

    body: dict[str, Any] = {"model": task.model, "prompt": task.prompt,
                            "images": [await ref(p) for p in task.images]}
    if task.mask is not None:
        body["mask"] = await ref(task.mask)
    for key, value in task.fields.items():
        if key == "model" or value is None:
            continue
        if key == "response_format" and not sends_response_format(task.model):
            continue
        body[key] = value
    return body


@dataclass
class InputFile:
    """One JSONL file of lines, on disk, and the tasks it carries."""

    path: Path
    lines: int = 0
    size: int = 0
    tasks: list[tuple[Task, str]] = field(default_factory=list)


class InputFiles:
    """Lines into files in `folder`, a new file before either limit would be passed."""

    def __init__(self, folder: Path, upload: ImageUploader,
                 max_lines: int = MAX_LINES, max_bytes: int = MAX_FILE_BYTES):
        self.folder, self.upload = folder, upload
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.files: list[InputFile] = []

    async def add(self, task: Task, fingerprint: str) -> None:
        line = json.dumps({"custom_id": custom_id(task.id, fingerprint), "method": "POST",
                           "url": ENDPOINT, "body": await edit_body(task, self.upload)},
                          ensure_ascii=False).encode() + b"\n"
        if len(line) > self.max_bytes:
            raise ValueError(f"task {task.id}: its batch line alone is over "
                             f"{self.max_bytes} bytes")
        current = self.files[-1] if self.files else None
        if (current is None or current.lines >= self.max_lines
                or current.size + len(line) > self.max_bytes):
            current = InputFile(Path(self.folder, f"batch-{len(self.files) + 1}.jsonl"))
            self.files.append(current)
        with current.path.open("ab") as fh:
            fh.write(line)
        current.lines += 1
        current.size += len(line)
        current.tasks.append((task, fingerprint))


@dataclass(frozen=True)
class LineResult:
    """One output or error line, checked: `body` is the answer's JSON when status is 200."""

    custom_id: str
    status: int | None  # None: the request never ran (e.g. batch_expired)
    request_id: str | None
    body: bytes | None
    error: StatusError | None
    code: str | None = None  # the line's own error code when it never ran
    message: str | None = None


def read_line(raw: bytes) -> LineResult | None:
    """An output/error line as OpenAI documents it; None when it is not one."""
    try:  # the answer's nesting bound, plus the line's own two levels
        line = parse_json(raw, max_depth=MAX_DEPTH + 2)
    except BadResponse:
        return None
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        return None
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status, body = response["status_code"], response.get("body")
        rid = response.get("request_id") if isinstance(response.get("request_id"), str) else None
        if status == 200:
            return LineResult(line["custom_id"], 200, rid, json.dumps(body).encode(), None)
        info = body.get("error") if isinstance(body, dict) else None
        info = info if isinstance(info, dict) else {}
        return LineResult(line["custom_id"], status, rid, None, StatusError(
            status, str(info.get("message") or "no message")[:500],
            type=_text(info.get("type")), code=_text(info.get("code")), request_id=rid))
    if isinstance(error, dict):
        return LineResult(line["custom_id"], None, None, None, None,
                          _text(error.get("code")), _text(error.get("message")))
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:500]


async def decode_answer(gateway: Gateway, task: Task, body: bytes,
                        request_id: str | None) -> Answer:
    """A 200 line's answer through the live answer's checks (answer.py: schema, bounds,
    exactly `n` images, each decoded; the gateway's words cleaned, the key masked)."""
    limit = gateway.max_answer_bytes(task.model)
    try:
        images = await decode_images_answer(
            body, n=task.n, max_bytes=limit,
            fetch=lambda url: gateway.downloads.fetch(url, limit), check=gateway.checking.check)
    except BadResponse as exc:
        exc.status, exc.request_id = 200, request_id  # answered, so billed
        gateway._clean(exc)
        raise
    secrets = gateway._secrets
    revised = images.revised_prompt
    return Answer(images.images, images.formats, images.usage,
                  None if revised is None else clean(revised, secrets, limit=None),
                  request_id, tuple(clean(note, secrets) for note in images.notes))


def _is_id(value: Any) -> bool:
    """An id we may put in a URL path: letters, digits, `_` and `-` (OpenAI's are so)."""
    return isinstance(value, str) and ID.fullmatch(value) is not None


def check_batch(payload: Any) -> dict[str, Any]:
    """A batch object with the fields we use, of the types we expect; else BadResponse."""
    if not isinstance(payload, dict) or not _is_id(payload.get("id")):
        raise BadResponse(f"not a batch object: {str(payload)[:120]}")
    if payload.get("status") not in STATUSES:
        raise BadResponse(f"batch {payload['id']}: unknown status {payload.get('status')!r}")
    counts = payload.get("request_counts") or {}
    if not isinstance(counts, dict) or not all(
            isinstance(counts.get(k, 0), int) for k in ("total", "completed", "failed")):
        raise BadResponse(f"batch {payload['id']}: request_counts is not three numbers")
    for key in ("output_file_id", "error_file_id", "input_file_id"):
        if payload.get(key) is not None and not _is_id(payload[key]):
            raise BadResponse(f"batch {payload['id']}: {key} is not a file id")
    for key in ("created_at", "completed_at", "failed_at", "expired_at", "cancelled_at"):
        if payload.get(key) is not None and not isinstance(payload[key], int):
            raise BadResponse(f"batch {payload['id']}: {key} is not a Unix time")
    if payload.get("metadata") is not None and not isinstance(payload["metadata"], dict):
        raise BadResponse(f"batch {payload['id']}: metadata is not a mapping")
    return payload


class BatchAPI:
    """OpenAI's Files and Batches calls, with the key sent to the gateway's origin only."""

    def __init__(self, session: aiohttp.ClientSession, provider: Provider, timeout: float,
                 models: Models | None = None):
        self.gateway = Gateway(session, provider, timeout, models)  # headers, checking
        self.session, self.base = session, provider.base_url
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, timeout),
                                             sock_read=timeout)

    def _headers(self) -> dict[str, str]:
        headers = self.gateway._headers("")
        headers.pop("Idempotency-Key")
        return headers

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await self._answered(method, path, **kwargs)
        except RequestError as exc:
            self.gateway._clean(exc)  # the gateway's words, cut and with the key masked
            raise

    async def _answered(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self.session.request(method, f"{self.base}{path}", headers=self._headers(),
                                            timeout=self.timeout, allow_redirects=False,
                                            **kwargs) as response:
                rid = response.headers.get("x-request-id")
                if response.status != 200:
                    raise await _status_error(response, CALL_MAX, rid)
                body = await read_capped(response, CALL_MAX)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to {self.gateway.host}: {exc.os_error}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise OutcomeUnknown(f"{method} {path}: no answer ({why})") from exc
        try:
            return parse_json(body)
        except BadResponse as exc:
            raise BadResponse(f"{method} {path}: {exc}") from exc

    async def upload(self, path: Path, purpose: str) -> str:
        with path.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("purpose", purpose)
            form.add_field("file", fh, filename=path.name)
            found = await self._call("POST", "/files", data=form)
        if not isinstance(found, dict) or not _is_id(found.get("id")):
            raise BadResponse(f"uploading {path.name}: no file id in {str(found)[:120]}")
        return str(found["id"])

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        return check_batch(await self._call("POST", "/batches", json={
            "input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h",
            "metadata": metadata}))

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return check_batch(await self._call("GET", f"/batches/{batch_id}"))

    async def find(self, token: str, since: int, max_pages: int = 100) -> dict[str, Any] | None:
        """The batch whose metadata carries `token`, looking back (newest first) to batches
        created at `since`; None when there is none."""
        after: str | None = None
        for _ in range(max_pages):
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await self._call("GET", "/batches", params=params)
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise BadResponse(f"listing batches: no list in {str(page)[:120]}")
            for item in data:
                if not isinstance(item, dict):
                    continue
                metadata = item.get("metadata")
                if isinstance(metadata, dict) and metadata.get(TOKEN_KEY) == token:
                    return check_batch(item)
                if isinstance(item.get("created_at"), int) and item["created_at"] < since:
                    return None  # older than our intent: it cannot be there
            if not page.get("has_more") or not data:
                return None
            after = str(data[-1].get("id"))
        return None

    async def lines(self, file_id: str) -> AsyncIterator[bytes]:
        """A file's lines as they arrive (output files can be gigabytes of images)."""
        url = f"{self.base}/files/{file_id}/content"
        try:
            async with self.session.get(url, headers=self._headers(), timeout=self.timeout,
                                        allow_redirects=False) as response:
                if response.status != 200:
                    error = await _status_error(response, CALL_MAX,
                                                response.headers.get("x-request-id"))
                    self.gateway._clean(error)
                    raise error
                line = bytearray()
                async for chunk in response.content.iter_chunked(1 << 20):
                    start = 0
                    while (end := chunk.find(b"\n", start)) != -1:
                        line += chunk[start:end]
                        if line.strip():
                            yield bytes(line)
                        line.clear()
                        start = end + 1
                    line += chunk[start:]
                    if len(line) > LINE_MAX:
                        raise BadResponse(f"file {file_id}: a line longer than {LINE_MAX} bytes")
                if line.strip():
                    yield bytes(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OutcomeUnknown(f"reading file {file_id}: {exc or type(exc).__name__}") from exc


def scratch_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="imgedit-batch-")
