"""What the simulator accepts: the relay's multipart form, read and validated into an `Edit`.

It owns the body limit, the models and sizes the relay knows, reading
`multipart/form-data` (`image` or repeated `image[]`, never `files[]`), the
relay's validation rules in the order it applies them, and `GatewayError`,
the refusal every layer of the simulator raises and answers in the gateway's
error shape.

It must never decode an image (that is `simulator_render.py`'s), never count,
delay or fault a request (`simulator.py`, `simulator_faults.py`), and never
keep the Authorization header: it reads only the form.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from aiohttp import BodyPartReader, web

from pipeline.simulator.faults import error_response
from pipeline.simulator.relay import MAX_BODY_BYTES, too_large
from pipeline.task import IMAGE_FORMATS

# Model -> most input images per request, as the upstream (OpenAI) takes them.
MODELS = {"gpt-image-1": 16, "gpt-image-1-mini": 16, "gpt-image-1.5": 16, "gpt-image-2": 16,
          "chatgpt-image-latest": 16, "dall-e-2": 1, "gemini-2.5-flash-image": 16,
          "gemini-3-pro-image-preview": 14, "gemini-3.1-flash-image": 14, "jimeng-4.0": 10}
SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto", "256x256", "512x512")
FREE_SIZE_MODELS = ("gpt-image-2",)  # any WxH: multiples of 16, 1:3 to 3:1, <= 3840x2160


class GatewayError(Exception):
    """A request the gateway refuses, raised wherever it fails, answered in its error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = "invalid_value", type: str = "invalid_request_error",
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type, self.headers = type, headers

    def response(self) -> web.Response:
        return error_response(self.status, self.message, type=self.type, code=self.code,
                              param=self.param, headers=self.headers)


def missing(param: str) -> GatewayError:
    return GatewayError(400, f"Missing required parameter: '{param}'.", param=param,
                        code="missing_required_parameter")


@dataclass(frozen=True)
class Part:
    field: str
    filename: str | None  # None for a text field
    content_type: str
    data: bytes


# What every client sends. Anything else goes to aiohttp's full RFC 7578 parser, which
# costs ~0.1 ms a call, once for a name and again for a filename: a fifth of our CPU.
SIMPLE_DISPOSITION = re.compile(r'form-data; *name="([^"\\]*)"(?:; *filename="(?!/)([^"\\]*)")?')


def disposition(part: BodyPartReader) -> tuple[str, str | None]:
    """A part's field name and filename (None for a text field)."""
    if match := SIMPLE_DISPOSITION.fullmatch(part.headers.get("Content-Disposition", "")):
        return match[1], match[2]
    return part.name or "", part.filename


def part_type(filename: str) -> str:
    """The Content-Type the relay gives a file part, from its name's extension alone
    (relay/channel/openai/adaptor.go detectImageMimeType): .jp* is JPEG, anything else
    that is not .png or .webp becomes PNG."""
    ext = ("." + filename.rpartition(".")[2].lower()) if "." in filename else ""
    if ext in (".jpg", ".jpeg") or ext.startswith(".jp"):
        return "image/jpeg"
    return "image/webp" if ext == ".webp" else "image/png"


async def read_form(request: web.Request) -> list[Part]:
    """Every multipart part in order, each file's type rewritten as the relay forwards it;
    a body over MAX_BODY_BYTES (128 MB) is the relay's 413."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_large()
    if request.content_type != "multipart/form-data":
        raise GatewayError(400, "Expected a multipart/form-data body.", code="invalid_body")
    parts, total = [], 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: the relay ignores it too
            chunks = []
            while chunk := await part.read_chunk(1 << 20):
                total += len(chunk)
                if total > MAX_BODY_BYTES:  # a chunked upload announces no length
                    raise too_large()
                chunks.append(chunk)
            field, filename = disposition(part)
            content_type = (part.headers.get("Content-Type", "text/plain") if filename is None
                            else part_type(filename))
            parts.append(Part(field, filename, content_type, b"".join(chunks)))
    except ValueError as exc:  # aiohttp's word for a broken multipart body
        raise GatewayError(400, f"Could not parse the multipart body: {exc}") from None
    return parts


@dataclass(frozen=True)
class Edit:
    """One request that passed validation."""

    model: str
    prompt: str
    images: tuple[Part, ...]
    mask: Part | None
    n: int
    size: tuple[int, int]
    output_format: str
    background: str
    compression: int | None
    response_format: str | None
    quality: str | None = None

    @cached_property
    def render_key(self) -> tuple[Any, ...]:
        digest = hashlib.sha256()
        for part in (*self.images, *([self.mask] if self.mask else [])):
            digest.update(len(part.data).to_bytes(8, "big"))
            digest.update(part.data)
        return (digest.digest(), self.prompt, self.size, self.output_format, self.background,
                self.compression)


def forwarded_images(parts: list[Part]) -> tuple[Part, ...]:
    """The files the relay forwards as images (relay/channel/openai/adaptor.go
    ConvertImageRequest): every `image` part; only when there is none, the `image[]`
    parts; only when there are none either, any `image[...]` field."""
    files = [p for p in parts if p.filename is not None]
    for wanted in ("image", "image[]"):
        found = tuple(p for p in files if p.field == wanted)
        if found:
            return found
    return tuple(p for p in files if p.field.startswith("image["))


def form_text(parts: list[Part]) -> dict[str, str]:
    """Text fields; a field sent twice reads as its first value (Go's FormValue)."""
    text: dict[str, str] = {}
    for part in parts:
        if part.filename is None:
            text.setdefault(part.field, part.data.decode("utf-8", "replace"))
    return text


async def read_json(request: web.Request) -> Any:
    """A JSON body (chat, gemini routes) up to the relay's body limit; 400 when unreadable."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_large()
    chunks, total = [], 0
    while chunk := await request.content.read(1 << 20):
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise GatewayError(400, f"Invalid request: {exc}", code="invalid_request",
                           type="new_api_error") from None


def free_size(size: str) -> bool:
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return False
    w, h = int(width), int(height)
    return (w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3 * min(w, h)
            and max(w, h) <= 3840 and min(w, h) <= 2160)


def parse_edit(parts: list[Part]) -> Edit:
    """Validate the form as the gateway does; the first problem is a GatewayError."""
    text = form_text(parts)
    model, prompt, size = text.get("model"), text.get("prompt"), text.get("size", "auto")
    if not model:
        raise missing("model")
    if model not in MODELS:
        raise GatewayError(503, f"No available channel for model {model} under group default "
                           f"(当前分组 default 下对于模型 {model} 无可用渠道)",
                           type="new_api_error", code="model_not_found")
    if not prompt:
        raise missing("prompt")
    response_format = text.get("response_format")
    if response_format is not None and model.startswith("gpt-image"):
        raise GatewayError(400, "Unknown parameter: 'response_format'.", param="response_format",
                           code="unknown_parameter")
    if response_format not in (None, "url", "b64_json"):
        raise GatewayError(400, f"Invalid response_format {response_format!r}.",
                           param="response_format")
    images = forwarded_images(parts)
    if not images:
        raise missing("image")
    if len(images) > MODELS[model]:
        raise GatewayError(400, f"{model} takes at most {MODELS[model]} images, not "
                           f"{len(images)}.", param="image")
    if model in FREE_SIZE_MODELS and size != "auto":
        if not free_size(size):
            raise GatewayError(400, f"Invalid size {size!r}: both sides multiples of 16, at "
                               "most 3:1, at most 3840x2160.", param="size")
    elif size not in SIZES:
        raise GatewayError(400, f"Invalid size {size!r}; supported: {', '.join(SIZES)}.",
                           param="size")
    output_format = text.get("output_format", "png")
    if output_format not in IMAGE_FORMATS:
        raise GatewayError(400, f"Invalid output_format {output_format!r}.", param="output_format")
    n = text.get("n", "1")
    if not n.isdigit() or not 1 <= int(n) <= 10:
        raise GatewayError(400, f"Invalid n {n!r}: from 1 to 10.", param="n")
    compression = text.get("output_compression")
    if compression is not None and not (compression.isdigit() and int(compression) <= 100):
        raise GatewayError(400, "output_compression is from 0 to 100.", param="output_compression")
    masks = [p for p in parts if p.field == "mask" and p.filename is not None]
    width, _, height = ("1024x1024" if size == "auto" else size).partition("x")
    return Edit(model, prompt, images, masks[0] if masks else None, int(n),
                (int(width), int(height)), output_format, text.get("background", "auto"),
                None if compression is None else int(compression), response_format,
                text.get("quality"))
