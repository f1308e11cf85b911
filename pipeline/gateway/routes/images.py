"""The images route: multipart `POST {base_url}/images/edits`, answered `{"data": [...]}`.

Request: `image` for one file, repeated `image[]` for several, the first `mask`,
`model` always, each file part named with the extension of its real format
(the relay rewrites every part's Content-Type from the file name's extension,
new-api relay/channel/openai/adaptor.go detectImageMimeType, so a PNG named
.jpg would reach the upstream as image/jpeg), `response_format` never to gpt-image
models (they answer 400 to it). Small inputs go as one bytes body; large ones
stream from disk, opened anew for every attempt.

Answer: `data` items with `b64_json`, a `url` or a `data:` URL. A 200 in another
route's shape (chat `choices`, Gemini `candidates`, no `data` list) is RouteUnfit:
the relay served the model some other way, and asking again on this route would
be paid again for the same useless answer.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any, BinaryIO

import aiohttp

from pipeline.config.models import sniff_format
from pipeline.config.settings import Provider
from pipeline.errors import BadResponse, RouteUnfit
from pipeline.gateway.answer import b64_image, take
from pipeline.gateway.routes import multipart
from pipeline.gateway.routes.base import Decoded, Request
from pipeline.task import IMAGE_FORMATS, Task

NAME = "images"
# Bytes: an input up to this size is read into memory, not streamed; a form whose inputs
# total at most this is sent as one body.
IN_MEMORY_MAX = 2 * 1024 * 1024


def sends_response_format(model: str) -> bool:
    return not model.startswith("gpt-image")  # gpt-image models answer 400 to it


async def request(task: Task, provider: Provider, files: ExitStack) -> Request:
    """The request body, and its Content-Type header when we set it ourselves.

    Small inputs (IN_MEMORY_MAX in all): the whole form as one bytes object, sent in
    one write (multipart.py). Handed a form, aiohttp writes every part on its own, a
    dozen sends a request, each a chance for the writer threads to take the GIL from
    the event loop. Otherwise aiohttp's FormData, which streams large files from disk.
    """
    url = f"{provider.base_url}/images/edits"
    parts, in_memory = _parts(task, provider, files)
    if in_memory > IN_MEMORY_MAX:
        return Request(url, _streamed(parts))
    body, content_type = multipart.form(parts)
    return Request(url, body, {"Content-Type": content_type})


def _parts(task: Task, provider: Provider, files: ExitStack
           ) -> tuple[list[tuple[str, str | multipart.File]], int]:
    """The form's parts in order, and the bytes of its files read into memory (over
    IN_MEMORY_MAX when one is streamed). Files are opened anew for every attempt, so a
    retry never sends a half-read body."""
    parts: list[tuple[str, str | multipart.File]] = [("model", task.model), ("prompt", task.prompt)]
    name = provider.image_field if len(task.images) == 1 else provider.images_field
    files_in = [(name, path) for path in task.images]
    if task.mask is not None:
        files_in.append(("mask", task.mask))
    in_memory = 0
    for field, path in files_in:
        body, fmt = _file_part(files.enter_context(path.open("rb")))
        in_memory += len(body) if isinstance(body, bytes) else IN_MEMORY_MAX + 1
        filename = multipart.label(f"{path.stem}.{fmt}" if fmt else path.name)
        content_type = IMAGE_FORMATS.get(fmt or "", "application/octet-stream")
        parts.append((field, multipart.File(filename, content_type, body)))
    for key, value in task.fields.items():
        if key == "model" or value is None:
            continue
        if key == "response_format" and not sends_response_format(task.model):
            continue
        parts.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    return parts, in_memory


def _streamed(parts: list[tuple[str, str | multipart.File]]) -> aiohttp.FormData:
    """The same parts as aiohttp's form, which streams a file part from disk."""
    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    for name, value in parts:
        if isinstance(value, str):
            form.add_field(name, value)
        else:
            form.add_field(name, value.data, filename=value.filename,
                           content_type=value.content_type)
    return form


def _file_part(file: BinaryIO) -> tuple[bytes | BinaryIO, str | None]:
    """The part's body and its real format (sniffed, not guessed from the name).
    A small file goes as bytes: one write instead of a thread hop per chunk; a large one
    is streamed from disk, so big inputs times the concurrency never fill memory."""
    fmt = sniff_format(file.read(16))
    file.seek(0)
    if os.fstat(file.fileno()).st_size <= IN_MEMORY_MAX:
        return file.read(), fmt
    return file, fmt


def decode(payload: Any, task: Task, max_bytes: int) -> Decoded:
    """The `data` items' images (b64_json decoded, URLs left for the client to fetch)."""
    if not isinstance(payload, dict):
        raise BadResponse(f"the answer is a JSON {type(payload).__name__}, not an object")
    if "choices" in payload or "candidates" in payload or not isinstance(
            payload.get("data"), list):
        shape = next((k for k in ("choices", "candidates") if k in payload), None)
        raise RouteUnfit(f"the images route answered {task.model} in another shape ("
                         f"{f'{shape!r}' if shape else 'no data list'}, keys: "
                         f"{', '.join(sorted(map(str, payload))[:6])}): this route cannot "
                         "serve the model")
    notes: list[str] = []
    items = take(payload["data"], task.n, notes)  # the rest is never read
    sources: list[bytes | str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadResponse(f"data[{index}] is a {type(item).__name__}, not an object")
        b64, url = item.get("b64_json"), item.get("url")
        if b64 is not None and b64 != "":
            sources.append(b64_image(b64, max_bytes=max_bytes, what=f"data[{index}].b64_json"))
        elif url is None or url == "":
            raise BadResponse(f"data[{index}] has neither b64_json nor url")
        elif not isinstance(url, str):
            raise BadResponse(f"data[{index}].url is {type(url).__name__}, not a string")
        else:
            sources.append(url)
    revised = next((i["revised_prompt"] for i in items
                    if isinstance(i.get("revised_prompt"), str)), None)
    return Decoded(sources, payload.get("usage"), revised, notes)
