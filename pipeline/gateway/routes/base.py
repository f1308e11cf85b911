"""What every route shares: the request it hands the client, the images it reads back,
and the one check every image passes before it counts as an answer.

A route module (images, chat, gemini) has `request(task, provider, files)` returning a
`Request`, and `decode(payload, task)` turning the answer's parsed JSON into a `Decoded`
or raising BadResponse (RouteUnfit when the body is another route's shape).
Nothing here sends, retries or writes.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.config.models import sniff_format
from pipeline.errors import BadResponse
from pipeline.task import IMAGE_FORMATS


@dataclass(frozen=True)
class Request:
    url: str
    body: Any  # bytes, or an aiohttp payload streamed from disk
    headers: dict[str, str] = field(default_factory=dict)  # Content-Type, when ours


@dataclass(frozen=True)
class Decoded:
    """An answer read into image sources: bytes already decoded, or a URL to fetch."""

    sources: list[bytes | str]
    usage: dict[str, Any] | None = None
    revised_prompt: str | None = None


def b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise BadResponse(f"expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadResponse(f"b64_json is not valid base64: {exc}") from exc


def data_url_bytes(url: str) -> bytes:
    head, _, data = url.partition(",")
    if not head.endswith(";base64"):
        raise BadResponse(f"a data: URL that is not base64: {head[:60]!r}")
    return b64(data)


def image_format(data: bytes) -> str:
    """The one check an answer's image passes, whatever route brought it: its real format
    (png, jpeg, webp), or BadResponse when the bytes are not a whole image."""
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise BadResponse(f"the answer's bytes are not an image: {data[:16]!r}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise BadResponse(f"the answer's {fmt} image is corrupt: {exc}") from exc
    return fmt


def inline(path: Path) -> tuple[str, str]:
    """(mime type, base64 text) of an input file, its type from its bytes, not its name."""
    data = path.read_bytes()
    mime = IMAGE_FORMATS.get(sniff_format(data[:16]) or "", "application/octet-stream")
    return mime, base64.b64encode(data).decode("ascii")


def origin(base_url: str) -> str:
    """`https://host/v1` -> `https://host`: the gemini route lives beside /v1, not under it."""
    trimmed = base_url.rstrip("/")
    return trimmed[: -len("/v1")] if trimmed.endswith("/v1") else trimmed
