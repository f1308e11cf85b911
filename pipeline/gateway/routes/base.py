"""What every route shares: the request it hands the client and the image sources it
finds in an answer.

A route module (images, chat, gemini) has `request(task, provider, files)` returning a
`Request`, and `decode(payload, task, max_bytes)` turning the answer's parsed JSON into
a `Decoded` or raising BadResponse (RouteUnfit when the body is another route's shape).
The checks every image then passes, whatever its route, are gateway/answer.py's
(`take`, `checked_images`): the client runs them on each `Decoded`.
Nothing here sends, retries or writes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.models import sniff_format
from pipeline.task import IMAGE_FORMATS


@dataclass(frozen=True)
class Request:
    url: str
    body: Any  # bytes, or an aiohttp payload streamed from disk
    headers: dict[str, str] = field(default_factory=dict)  # Content-Type, when ours


@dataclass(frozen=True)
class Decoded:
    """An answer read into image sources: bytes already decoded, or a URL to fetch (a
    `data:` URL or http(s)); usage as the answer gave it (answer.usage_of judges it)."""

    sources: list[bytes | str]
    usage: Any = None
    revised_prompt: str | None = None
    notes: list[str] = field(default_factory=list)  # what was ignored, for the sidecar


def inline(path: Path) -> tuple[str, str]:
    """(mime type, base64 text) of an input file, its type from its bytes, not its name."""
    data = path.read_bytes()
    mime = IMAGE_FORMATS.get(sniff_format(data[:16]) or "", "application/octet-stream")
    return mime, base64.b64encode(data).decode("ascii")


def origin(base_url: str) -> str:
    """`https://host/v1` -> `https://host`: the gemini route lives beside /v1, not under it."""
    trimmed = base_url.rstrip("/")
    return trimmed[: -len("/v1")] if trimmed.endswith("/v1") else trimmed
