"""`prepare:` in a manifest: how inputs are converted before upload, and what that promises.

Owns checking the settings (`{max_side: 2048, format: png|jpeg, quality: 90}`)
into a `Prepare`, and what preflight may assume of a prepared input: the
format it will have (so a CMYK JPEG or a 16-bit PNG is fine), and that its
byte size is only known once it is made. The conversion itself is run/prepare.py's.

It never opens, decodes or writes an image.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pipeline.config.models import FileFacts
from pipeline.task import Prepare

KEYS = ("max_side", "format", "quality")
FORMATS = ("png", "jpeg")


def check(value: Any) -> str | None:
    """What is wrong with a `prepare:` value, or None."""
    parsed = parse(value)
    return parsed if isinstance(parsed, str) else None


def parse(value: Any) -> Prepare | str:
    """The settings, or a message saying what is wrong and what is accepted."""
    if not isinstance(value, Mapping):
        return "expected a mapping like {max_side: 2048, format: jpeg, quality: 90}"
    unknown = [str(k) for k in value if k not in KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"prepare takes: {', '.join(KEYS)}"
        return f"unknown key {unknown[0]!r}; {hint}"
    side, fmt, quality = value.get("max_side"), value.get("format"), value.get("quality", 90)
    if side is not None and not (_whole(side) and 16 <= side <= 16384):
        return f"max_side {side!r} must be a whole number of pixels from 16 to 16384"
    if fmt is not None:
        fmt = "jpeg" if str(fmt).lower() == "jpg" else str(fmt).lower()
        if fmt not in FORMATS:
            return f"format {value.get('format')!r} is not one of: {', '.join(FORMATS)}"
    if not (_whole(quality) and 1 <= quality <= 100):
        return f"quality {quality!r} must be a whole number from 1 to 100"
    if side is None and fmt is None:
        return "say what to do: max_side (e.g. 2048), format (png or jpeg), or both"
    return Prepare(max_side=side, format=fmt, quality=quality)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def facts(found: FileFacts, prepare: Prepare, *, mask: bool = False) -> FileFacts:
    """What the model checks may assume of an input once prepared.

    The format is the one asked for (a mask stays PNG, keeping its transparency);
    the byte size is 0, unknown until the file is made: run/prepare.py checks it
    against the model's limit before anything is sent.
    """
    if found.format is None:
        return found  # not an image we can read: preflight says so as usual
    fmt = "png" if mask else prepare.format or ("png" if found.format == "webp" else found.format)
    return FileFacts(0, fmt)
