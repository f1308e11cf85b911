"""The simulator's Batch API: `/v1/files` and `/v1/batches` in OpenAI's documented shapes.

The relay does not relay the Batch API (new-api's router/relay-router.go
answers `/v1/files` with controller.RelayNotImplemented and has no
`/v1/batches` route), so here the truth is OpenAI's API reference: the file
object, the batch object (`id`, `object: "batch"`, `endpoint`,
`input_file_id`, `completion_window`, `status` validating → in_progress →
finalizing → completed, or failed / expired / cancelling → cancelled,
`output_file_id`, `error_file_id`, `created_at` and the other `*_at` times,
`request_counts {total, completed, failed}`, `metadata`), the list with
`after` / `limit` pagination (newest first), and the input and output lines.

Each line runs through the live edit's code (`batchlines.py`). Time is
scaled: a batch that OpenAI finishes within 24 hours ends here `seconds`
after it is created (`POST /_sim/batch {"seconds": 0.2}`), and its output
lines come in a shuffled order, as OpenAI's may. Faults (`BatchFaults`):
failing lines, a batch that expires half done, an unknown custom_id, a
hostile answer, a create whose answer is lost. Holds (`holds.py`) stop a
request at a named point.

It never writes to disk (files live in memory) and never keeps a key.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from pipeline.simulator.batchlines import (
    ENDPOINT,
    BatchFaults,
    LineRunner,
    check_lines,
    error_line,
)
from pipeline.simulator.faults import error_response
from pipeline.simulator.holds import Holds
from pipeline.simulator.render import RenderCache

FILE_MAX_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
PURPOSES = ("batch", "vision", "user_data", "batch_output")
WINDOW = 24 * 3600


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed"}


@dataclass
class BatchStats:
    files_uploaded: int = 0
    batches_created: int = 0
    lines_run: int = 0
    runs_by_custom_id: Counter[str] = field(default_factory=Counter)


def _new_id(prefix: str) -> str:
    """OpenAI's spellings: batch_abc..., file-abc..."""
    return f"{prefix}{'_' if prefix == 'batch' else '-'}{secrets.token_hex(12)}"


def _error(status: int, message: str, code: str | None = "invalid_value",
           param: str | None = None) -> web.Response:
    return error_response(status, message, type="invalid_request_error", code=code, param=param)


class BatchAPI:
    def __init__(self, cache: RenderCache):
        self.lines = LineRunner(cache)
        self.holds = Holds()
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # insertion order: oldest first
        self.faults = BatchFaults()
        self.seconds = 1.0
        self.stats = BatchStats()
        self.rng = random.Random(0)
        self.work: set[asyncio.Task[None]] = set()

    # -- files --

    async def create_file(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "multipart/form-data":
            return _error(400, "Expected a multipart/form-data body.", code="invalid_body")
        purpose, filename, data = None, "upload", b""
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 20):  # read(): aiohttp's 1 MB cap
                size += len(chunk)
                if size > FILE_MAX_BYTES:
                    return _error(413, "The file is larger than 200 MB.", code="file_too_large")
                chunks.append(chunk)
            if part.name == "purpose":
                purpose = b"".join(chunks).decode("utf-8", "replace")
            elif part.name == "file":
                filename, data = part.filename or filename, b"".join(chunks)
        if purpose not in PURPOSES:
            return _error(400, f"Invalid purpose {purpose!r}.", param="purpose")
        if not data:
            return _error(400, "Missing required parameter: 'file'.", param="file",
                          code="missing_required_parameter")
        await self.holds.at("files.create")
        stored = StoredFile(_new_id("file"), filename, purpose, data)
        self.files[stored.id] = stored
        self.stats.files_uploaded += 1
        return web.json_response(stored.as_object())

    def _file(self, request: web.Request) -> StoredFile | None:
        return self.files.get(request.match_info["file_id"])

    async def get_file(self, request: web.Request) -> web.Response:
        found = self._file(request)
        if found is None:
            return _error(404, "No such File object.", code="not_found")
        return web.json_response(found.as_object())

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        found = self._file(request)
        if found is None:
            return _error(404, "No such File object.", code="not_found")
        lines = found.data.splitlines(keepends=True)
        half = len(lines) // 2
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        try:
            await response.write(b"".join(lines[:half]))
            await self.holds.at("files.content")  # a test may kill the reader here
            await response.write(b"".join(lines[half:]))
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the reader is gone (killed while held)
        return response

    # -- batches --

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The body is not JSON.", code="invalid_body")
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object.", code="invalid_body")
        source = self.files.get(str(body.get("input_file_id")))
        metadata = body.get("metadata")
        if source is None or source.purpose != "batch":
            return _error(400, "input_file_id must name a file uploaded with purpose batch.",
                          param="input_file_id")
        if body.get("endpoint") != ENDPOINT:
            return _error(400, f"This simulator batches only {ENDPOINT}.", param="endpoint")
        if body.get("completion_window") != "24h":
            return _error(400, "Only the 24h completion_window is supported.",
                          param="completion_window")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
                isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items())):
            return _error(400, "metadata: at most 16 string pairs.", param="metadata")
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": _new_id("batch"), "object": "batch", "endpoint": ENDPOINT, "errors": None,
            "input_file_id": source.id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + WINDOW, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata}
        self.batches[batch["id"]] = batch
        self.stats.batches_created += 1
        job = asyncio.get_running_loop().create_task(self._process(batch, source.data))
        self.work.add(job)
        job.add_done_callback(self.work.discard)
        await self.holds.at("batches.create")  # created: a test may kill the client here
        if self.faults.drop_create and request.transport is not None:
            request.transport.close()  # created, and the client never hears of it
        return web.json_response(batch)

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.", code="not_found")
        return web.json_response(batch)

    async def list_batches(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _error(400, "limit must be from 1 to 100.", param="limit")
        newest = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after is not None:
            ids = [b["id"] for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        page = newest[:limit]
        return web.json_response({
            "object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(newest) > limit})

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.", code="not_found")
        if batch["status"] not in ("validating", "in_progress", "finalizing"):
            return _error(409, f"Cannot cancel a batch that is {batch['status']}.",
                          code="batch_not_cancellable")
        batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return web.json_response(batch)

    async def _process(self, batch: dict[str, Any], data: bytes) -> None:
        lines, errors = check_lines(data)
        faults, step = self.faults, self.seconds / (len(lines) + 2)
        await asyncio.sleep(step)
        if errors:
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": errors[:100]})
            return
        if batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=int(time.time()))
        batch["request_counts"]["total"] = len(lines)
        runs = len(lines) // 2 if faults.expire else len(lines)
        files = {f.id: f.data for f in self.files.values() if f.purpose != "batch"}
        outputs: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for line in lines[:runs]:
            if batch["status"] == "cancelling":
                break
            result = await self.lines.run(line, files, faults)
            self.stats.lines_run += 1
            self.stats.runs_by_custom_id[result["custom_id"]] += 1
            ok = result["response"]["status_code"] == 200
            (outputs if ok else failures).append(result)
            batch["request_counts"]["completed" if ok else "failed"] += 1
            await asyncio.sleep(step)
        self._finish(batch, lines, outputs, failures, faults)

    def _finish(self, batch: dict[str, Any], lines: list[dict[str, Any]],
                outputs: list[dict[str, Any]], failures: list[dict[str, Any]],
                faults: BatchFaults) -> None:
        now = int(time.time())
        if batch["status"] == "cancelling":
            end = {"status": "cancelled", "cancelled_at": now}
        elif faults.expire:
            done = {r["custom_id"] for r in (*outputs, *failures)}
            failures += [error_line(line["custom_id"], "batch_expired",
                                    "This request could not be executed before the "
                                    "completion window expired.")
                         for line in lines if line["custom_id"] not in done]
            end = {"status": "expired", "expired_at": now}
        else:
            end = {"status": "completed", "completed_at": now}
        if faults.unknown_custom_id and outputs:
            outputs.append({**outputs[0], "custom_id": "nobody-asked-for-this"})
        self.rng.shuffle(outputs)  # OpenAI returns lines in any order
        for name, rows in (("output_file_id", outputs), ("error_file_id", failures)):
            if rows:
                data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                stored = StoredFile(_new_id("file"), f"{batch['id']}_{name[:-8]}.jsonl",
                                    "batch_output", data)
                self.files[stored.id] = stored
                batch[name] = stored.id
        batch.update(finalizing_at=now, **end)

    async def stop(self, app: web.Application) -> None:
        """Batches still running end with the app, as they would with the gateway."""
        for job in list(self.work):
            job.cancel()
        await asyncio.gather(*self.work, return_exceptions=True)

    # -- the test's controls --

    async def post_options(self, request: web.Request) -> web.Response:
        body = dict(await request.json())
        try:
            if "seconds" in body:
                seconds = float(body.pop("seconds"))
                if seconds < 0:
                    raise ValueError("seconds must be 0 or more")
                self.seconds = seconds
            self.faults = BatchFaults.from_mapping(body)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self.get_stats(request)

    async def get_stats(self, request: web.Request) -> web.Response:
        stats = self.stats
        return web.json_response({
            "files_uploaded": stats.files_uploaded, "batches_created": stats.batches_created,
            "lines_run": stats.lines_run, "runs_by_custom_id": dict(stats.runs_by_custom_id),
            "seconds": self.seconds, "faults": self.faults.__dict__})


def add_routes(app: web.Application, cache: RenderCache) -> BatchAPI:
    api = BatchAPI(cache)
    auth = _authorized
    app.router.add_post("/v1/files", auth(api.create_file))
    app.router.add_get("/v1/files/{file_id}", auth(api.get_file))
    app.router.add_get("/v1/files/{file_id}/content", auth(api.file_content))
    app.router.add_post("/v1/batches", auth(api.create_batch))
    app.router.add_get("/v1/batches", auth(api.list_batches))
    app.router.add_get("/v1/batches/{batch_id}", auth(api.get_batch))
    app.router.add_post("/v1/batches/{batch_id}/cancel", auth(api.cancel_batch))
    app.router.add_post("/_sim/batch", api.post_options)
    app.router.add_get("/_sim/batch", api.get_stats)
    api.holds.add_routes(app)
    app.on_cleanup.append(api.stop)
    return api


def _authorized(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    """The live route's rule: no Bearer token, a 401 (the token itself is never kept)."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("Authorization", "").removeprefix("Bearer ").strip():
            return _error(401, "You didn't provide an API key.", code="invalid_api_key")
        response: web.StreamResponse = await handler(request)
        return response

    return guarded
