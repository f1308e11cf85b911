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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from aiohttp import BodyPartReader, web

from pipeline.simulator.faults import error_response
from pipeline.task import IMAGE_FORMATS

MAX_BODY_BYTES = 64 * 1024 * 1024
# Model -> most input images per request. Any other model has no channel at the relay.
MODELS = {"gpt-image-1": 16, "gpt-image-1-mini": 16, "dall-e-2": 1, "gemini-2.5-flash-image": 16,
          "gemini-3-pro-image-preview": 14, "jimeng-4.0": 10}
SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto", "256x256", "512x512")


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


async def read_form(request: web.Request) -> list[Part]:
    """Every multipart part in order; a body over MAX_BODY_BYTES is a 413."""
    too_large = f"Request body larger than {MAX_BODY_BYTES} bytes."
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise GatewayError(413, too_large, code="request_too_large")
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
                    raise GatewayError(413, too_large, code="request_too_large")
                chunks.append(chunk)
            content_type = part.headers.get("Content-Type", "text/plain")
            parts.append(Part(*disposition(part), content_type, b"".join(chunks)))
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


def parse_edit(parts: list[Part]) -> Edit:
    """Validate the form as the gateway does; the first problem is a GatewayError."""
    text = {p.field: p.data.decode("utf-8", "replace") for p in parts if p.filename is None}
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
    images = tuple(p for p in parts if p.field in ("image", "image[]") and p.filename is not None)
    if not images:
        raise missing("image")
    if len(images) > MODELS[model]:
        raise GatewayError(400, f"{model} takes at most {MODELS[model]} images, not "
                           f"{len(images)}.", param="image")
    if size not in SIZES:
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
