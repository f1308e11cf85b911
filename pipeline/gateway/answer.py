"""An answer, parsed against a schema, within bounds.

Owns turning what a gateway sent back into images we may keep: the body read
with a size cap (`read_capped`), JSON kept only when its nesting is shallow
(`parse_json`), every field's type checked, usage values validated
(`usage_of`), base64 sized before it is decoded, and each image fully decoded
under a pixel limit, in png, jpeg or webp only (`check_image`; a png's chunks and
compressed stream are proved whole by `pngcheck` instead of decoding its pixels).
Exactly `n` images count: extra items are ignored and noted, fewer fail the answer
(`take`, `checked_images`; `decode_images_answer` for the `/images/edits` shape).

Every route reads its answer through these functions: a route that finds images
elsewhere (a chat message's data URL, Gemini's `inlineData`) hands its sources
(bytes, `data:` or http(s) URLs) to `take` and `checked_images` (or single bytes
to `check_image`), its body to `parse_json` and its usage to `usage_of`.

Any surprise is a BadResponse with a clear reason, never another exception.
Never sends a request itself (URLs are fetched by the caller's `fetch`), never
writes a file, and never keeps the pixels it decoded.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from pipeline.config.models import sniff_format
from pipeline.config.redact import clean
from pipeline.errors import BadResponse
from pipeline.gateway.pngcheck import check_png

MB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MB  # `max_answer_mb` in models.yaml overrides it per model
MAX_DEPTH = 32  # an images answer nests 4 deep; a body nested deeper is no answer
MAX_STRUCTURE = 100_000  # objects and arrays in a body: a real answer has a few dozen
# Pixels one returned image may have, checked from its header before it is decoded: the
# largest outputs (4K) are ~17 MP; a 30000x30000 bomb is 900 MP. Pillow's global
# Image.MAX_IMAGE_PIXELS is left as it is for the input checks; answers get this one.
MAX_PIXELS = 40_000_000
MAX_TOKENS = 10**9  # a usage count above this is nonsense, and would overflow a price
TEXT_CHARS = 4000  # a revised prompt kept in the sidecar

_OPENERS: dict[str, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile, "jpeg": JpegImagePlugin.JpegImageFile,
    "webp": WebPImagePlugin.WebPImageFile}
_OTHER_FORMATS = [  # what a refused image was, for the message
    (b"GIF8", "a GIF"), (b"II*\x00", "a TIFF"), (b"MM\x00*", "a TIFF"), (b"BM", "a BMP"),
    (b"<svg", "an SVG"), (b"<?xml", "XML (an SVG?)"), (b"\x00\x00\x01\x00", "an ICO"),
]
_USAGE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # what we keep of usage's key names


@dataclass(frozen=True)
class Images:
    """The checked result of one answer: exactly the images asked for."""

    images: list[bytes]
    formats: list[str]  # the real format of each: png, jpeg or webp
    usage: dict[str, Any] | None
    revised_prompt: str | None
    notes: list[str] = field(default_factory=list)  # what was ignored, for the sidecar


async def read_capped(response: aiohttp.ClientResponse, limit: int, *,
                      head_only: bool = False) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` bytes: by its
    Content-Length before reading, else while it streams in. With `head_only` (an error
    body, read for its message) the first `limit` bytes are returned instead."""
    declared = response.content_length
    if declared is not None and declared > limit and not head_only:
        raise BadResponse(f"the answer is {_mb(declared)}, over the {_mb(limit)} limit "
                          "(max_answer_mb in models.yaml)")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        if size + len(chunk) > limit:
            if head_only:
                chunks.append(chunk[: limit - size])
                break
            chunks.clear()  # the error's traceback keeps this frame: let the bytes go now
            raise BadResponse(f"the answer is over the {_mb(limit)} limit "
                              "(max_answer_mb in models.yaml); the rest was not read")
        size += len(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `body`, refused when it nests deeper than `max_depth` or holds
    more than MAX_STRUCTURE objects and arrays.

    The parser is CPython's C one: it guards its own recursion, so a nest thousands deep
    is a RecursionError at about a thousand levels, never a crashed stack; what it parses
    is then measured without recursing. (Measuring on the bytes first meant a regular
    expression over the whole body: 15 ms of the event loop for a 2 MB image answer,
    five times the parse itself.)"""
    try:
        value = json.loads(body)
    except RecursionError as exc:
        raise BadResponse(f"the answer is nested over {sys.getrecursionlimit()} deep (at "
                          f"most {max_depth} taken)") from exc
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise BadResponse(f"the answer is not JSON ({exc}): {_excerpt(body)}") from exc
    _check_shape(value, max_depth)
    return value


def _check_shape(value: Any, max_depth: int) -> None:
    """Depth and count of the objects and arrays in a parsed value, walked with a stack."""
    containers = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise BadResponse(f"the answer is nested {depth} deep (at most {max_depth} taken)")
        containers += 1
        if containers > MAX_STRUCTURE:
            raise BadResponse(f"the answer holds over {MAX_STRUCTURE:,} objects and arrays: "
                              "no image answer does")
        stack.extend((child, depth + 1) for child in children)


def usage_of(value: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The usage counts we can trust, and a note for each value ignored. Kept: finite,
    non-negative numbers up to MAX_TOKENS under name-like keys, and one level of
    `*_details` maps of the same."""
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [f"usage ignored: {type(value).__name__}, not an object"]
    kept: dict[str, Any] = {}
    notes: list[str] = []
    for key, count in list(value.items())[:50]:
        if not _is_name(key):
            notes.append(f"usage key {_shown(key)} ignored: not a name")
        elif isinstance(count, dict):
            inner = {k: v for k, v in list(count.items())[:50]
                     if _is_name(k) and _count_ok(v)}
            if len(inner) < len(count):
                notes.append(f"usage.{clean(key, limit=60)}: some values ignored")
            kept[key] = inner
        elif _count_ok(count):
            kept[key] = count
        else:
            notes.append(f"usage.{clean(key, limit=60)} ignored: {_shown(count)} is not a "
                         "count")
    return (kept or None), notes


def _is_name(key: Any) -> bool:
    return isinstance(key, str) and _USAGE_KEY.fullmatch(key) is not None


def _count_ok(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= MAX_TOKENS  # False for NaN; no float() that could overflow


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"a JSON {type(value).__name__}"
    try:
        return clean(repr(value), limit=60)
    except ValueError:  # an int too long to print
        return "a huge number"


def check_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> tuple[bytes, str]:
    """`data` and its format, once it has decoded whole as a png, jpeg or webp of at most
    `max_pixels`. Anything else is a BadResponse saying what it was.

    Plain and thread-safe (no warnings filters touched): callers may run it in a worker
    thread, where Pillow and zlib work without holding the GIL."""
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise BadResponse(f"the answer's image is {_what(data)}, not png, jpeg or webp")
    try:
        # The format's own plugin class: no other parser ever sees the bytes, and no
        # DecompressionBombWarning either (our limit, below, is the one that counts).
        with _OPENERS[fmt](io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadResponse(f"the answer's {fmt} is {width}x{height} pixels, over "
                                  f"the {max_pixels:,} taken: a decompression bomb")
            # Every pixel: a truncated or corrupt file fails here. A PNG is proved whole
            # from its chunks and stream instead (pngcheck: ~4x cheaper, and stricter).
            if not isinstance(image, PngImagePlugin.PngImageFile) or check_png(data, image):
                image.load()
    except BadResponse:
        raise
    except Image.DecompressionBombError as exc:
        raise BadResponse(f"the answer's {fmt} is a decompression bomb: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise BadResponse(f"the answer's {fmt} image is corrupt: {exc}") from exc
    if width < 1 or height < 1:
        raise BadResponse(f"the answer's {fmt} image is empty ({width}x{height})")
    return data, fmt


def b64_image(text: Any, *, max_bytes: int, what: str = "b64_json") -> bytes:
    """Base64 text decoded, its size judged from its length first."""
    if not isinstance(text, str):
        raise BadResponse(f"{what} is {type(text).__name__}, not a string")
    if len(text) // 4 * 3 > max_bytes:
        raise BadResponse(f"{what} would decode to {_mb(len(text) // 4 * 3)}, over the "
                          f"{_mb(max_bytes)} limit (max_answer_mb in models.yaml)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadResponse(f"{what} is not valid base64: {exc}") from exc


def data_url_image(url: str, *, max_bytes: int) -> bytes:
    """The bytes of a `data:image/...;base64,` URL."""
    head, comma, payload = url.partition(",")
    if not comma or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise BadResponse(f"a data URL that is no base64 image: {clean(head, limit=80)}")
    return b64_image(payload, max_bytes=max_bytes, what="the data URL")


Fetch = Callable[[str], Awaitable[bytes]]
Check = Callable[[bytes], Awaitable[tuple[bytes, str]]]  # check_image, run somewhere


async def in_a_thread(data: bytes, limiter: anyio.CapacityLimiter | None = None
                      ) -> tuple[bytes, str]:
    """check_image(data) in a worker thread (`limiter`: how many at once)."""
    return await anyio.to_thread.run_sync(functools.partial(check_image, data),
                                          limiter=limiter)


async def decode_images_answer(body: bytes, *, n: int, max_bytes: int = DEFAULT_MAX_BYTES,
                               fetch: Fetch, check: Check | None = None) -> Images:
    """An `/images/edits` answer (`{"data": [{"b64_json"|"url", "revised_prompt"?}],
    "usage"?}`) as exactly `n` checked images. `fetch` downloads an http(s) URL under the
    caller's rules. A BadResponse raised here carries the answer's usage, when it had any,
    so the caller can price what it paid for."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise BadResponse(f"the answer is a JSON {type(payload).__name__}, not an object")
    usage, notes = usage_of(payload.get("usage"))
    try:
        data = payload.get("data")
        if not isinstance(data, list):
            got = "missing" if data is None else f"a {type(data).__name__}"
            raise BadResponse(f"the answer's 'data' is {got}, not a list of images")
        items = take(data, n, notes)
        sources = [_item_source(item, index, max_bytes) for index, item in enumerate(items)]
        images, formats = await checked_images(sources, n=n, max_bytes=max_bytes, fetch=fetch,
                                               check=check)
    except BadResponse as exc:
        exc.usage = usage
        raise
    revised = next((item["revised_prompt"] for item in items
                    if isinstance(item.get("revised_prompt"), str)), None)
    return Images(images, formats, usage,
                  None if revised is None else clean(revised, limit=TEXT_CHARS), notes)


def take(found: list[Any], n: int, notes: list[str]) -> list[Any]:
    """The first `n` of what an answer holds: fewer is a BadResponse, more are noted (and
    never read)."""
    if len(found) < n:
        raise BadResponse(f"the answer holds {len(found)} image(s); {n} were asked for")
    if len(found) > n:
        notes.append(f"the answer held {len(found)} images; {n} asked for: the other "
                     f"{len(found) - n} were ignored")
    return found[:n]


async def checked_images(sources: list[bytes | str], *, n: int, max_bytes: int,
                         fetch: Fetch, check: Check | None = None
                         ) -> tuple[list[bytes], list[str]]:
    """Images and their formats from what a route found: bytes already decoded, a `data:`
    URL, or an http(s) URL for `fetch`. Exactly `n` sources are expected (use `take`
    first); each passes `check_image`, run by `check` (a Gateway's `Checking.check`), by
    default in a worker thread (a 1024x1024 PNG takes ~2-17 ms of CPU to check, a jpeg
    or webp to decode; the event loop keeps sending meanwhile)."""
    if len(sources) != n:
        raise BadResponse(f"the answer holds {len(sources)} image(s); {n} were asked for")
    images, formats = [], []
    for source in sources:
        if isinstance(source, str):
            is_data = source[:5].lower() == "data:"
            source = (data_url_image(source, max_bytes=max_bytes) if is_data
                      else await fetch(source))
        if len(source) > max_bytes:
            raise BadResponse(f"an image of {_mb(len(source))} is over the {_mb(max_bytes)} "
                              "limit (max_answer_mb in models.yaml)")
        data, fmt = await (check or in_a_thread)(source)
        images.append(data)
        formats.append(fmt)
    return images, formats


def _item_source(item: Any, index: int, max_bytes: int) -> bytes | str:
    """One `data` item as image bytes (from b64_json) or a URL to read."""
    if not isinstance(item, dict):
        raise BadResponse(f"data[{index}] is a {type(item).__name__}, not an object")
    b64, url = item.get("b64_json"), item.get("url")
    if b64 is not None and b64 != "":
        return b64_image(b64, max_bytes=max_bytes, what=f"data[{index}].b64_json")
    if url is None or url == "":
        raise BadResponse(f"data[{index}] has neither b64_json nor url")
    if not isinstance(url, str):
        raise BadResponse(f"data[{index}].url is {type(url).__name__}, not a string")
    return url


def _what(data: bytes) -> str:
    head = data[:16].lstrip()
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF":
        return "a RIFF file that is not WebP"
    return "no image" if data else "empty"


def _excerpt(body: bytes) -> str:
    return clean(body[:120].decode("utf-8", "replace"), limit=120)


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"
