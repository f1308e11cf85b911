"""What each key of a task (or of `defaults`) takes: one value checked, with what is accepted.

Owns the value rules (choices, whole-number ranges, sizes, file and pattern
lists, `models`, `prepare`), "did you mean" for unknown keys, and spotting
CSV placeholders. It never looks at files or at what a model accepts.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pipeline.manifest import compare, csvsource, prepared
from pipeline.task import IMAGE_FORMATS

_CHOICES = {
    "background": ("transparent", "opaque", "auto"),
    "output_format": tuple(IMAGE_FORMATS),
    "input_fidelity": ("high", "low"),
    "response_format": ("url", "b64_json"),
}
INTS = {"n": (1, 10), "output_compression": (0, 100)}
_SIZE = re.compile(r"^(\d+x\d+|auto)$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_value(key: str, value: Any) -> str | None:
    """What is wrong with one task or defaults value, or None. Says what is accepted."""
    if key in INTS:
        low, high = INTS[key]
        if not _is_int(value) or not low <= value <= high:
            return f"{value!r} must be a whole number from {low} to {high}"
    elif key in _CHOICES:
        if value not in _CHOICES[key]:
            return f"{value!r} is not one of: {', '.join(_CHOICES[key])}"
    elif key == "size":
        if not isinstance(value, str) or not _SIZE.match(value):
            return f"{value!r} is not like 1024x1024 or auto"
    elif key in ("images", "glob", "exclude"):
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            what = "file name" if key == "images" else "pattern"
            return f"expected a {what} or a list of {what}s"
    elif key == "models":
        return compare.check(value)
    elif key == "prepare":
        return prepared.check(value)
    elif not ((isinstance(value, str) and value.strip()) or (key == "id" and _is_int(value))):
        return f"expected text, got {value!r}"
    return None


def did_you_mean(key: Any, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"unknown key {str(key)!r}; {hint}"


def has_placeholders(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(csvsource.placeholders(value))
    except ValueError:
        return False


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
