"""Which request fields, and which values of them, a model takes.

Owns one judgment, used twice: a task's own field the model refuses is an
error (`validate` names it), while a field inherited from the manifest's
`defaults` that the model refuses is left out for that task (`validate` lists
which). Sizes are a list, or for gpt-image-2 a rule (`free_size`). It reads a
ModelSpec and a value, and never touches files or the network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol


class ModelSpec(Protocol):
    """What of a model's spec (config/models.py) these checks read."""

    @property
    def name(self) -> str: ...
    @property
    def takes(self) -> tuple[str, ...] | None: ...
    @property
    def response_format(self) -> bool: ...
    @property
    def sizes(self) -> tuple[str, ...]: ...
    @property
    def free_size(self) -> Mapping[str, Any] | None: ...
    @property
    def qualities(self) -> tuple[str, ...]: ...


_SIZE = re.compile(r"^(\d+)x(\d+)$")


def free_size_problem(rule: Mapping[str, Any], size: str) -> str | None:
    """What is wrong with `size` under a free-size rule, or None when it fits."""
    match = _SIZE.match(size)
    if not match:
        return "is not WIDTHxHEIGHT"
    width, height = int(match[1]), int(match[2])
    multiple = int(rule.get("multiple", 1))
    long, short = max(width, height), min(width, height)
    if width % multiple or height % multiple:
        return f"has a side that is not a multiple of {multiple}"
    if short == 0 or long / short > float(rule.get("max_ratio", 3)):
        return f"is longer than {rule.get('max_ratio', 3)}:1"
    if long > int(rule.get("max_long", long)) or short > int(rule.get("max_short", short)):
        return f"is larger than {rule.get('max_long')}x{rule.get('max_short')}"
    return None


def refusal(spec: ModelSpec, field: str, value: Any) -> str | None:
    """Why `spec` refuses `field: value` (a sentence saying what it takes), or None."""
    name = spec.name
    if field == "response_format" and not spec.response_format:
        return f"{name} refuses response_format (it always answers base64): remove it"
    if spec.takes is not None and field not in spec.takes:
        return f"{name} does not take {field}: remove it"
    if field == "size" and value is not None and value not in spec.sizes:
        if spec.free_size and value != "auto":
            wrong = free_size_problem(spec.free_size, str(value))
            if wrong is None:
                return None
            rule = spec.free_size
            return (f"size {value!r} {wrong}; {name} takes any WIDTHxHEIGHT with sides "
                    f"multiples of {rule.get('multiple', 1)}, at most "
                    f"{rule.get('max_ratio', 3)}:1, up to {rule.get('max_long')}x"
                    f"{rule.get('max_short')}, or auto")
        if spec.sizes:
            return f"{name} does not take size {value!r}; use one of: {', '.join(spec.sizes)}"
        return f"{name} does not take size: remove it"
    if field == "quality" and value is not None and value not in spec.qualities:
        if not spec.qualities:
            return f"{name} does not take quality: remove it"
        return (f"{name} does not take quality {value!r}; use one of: "
                f"{', '.join(spec.qualities)}")
    return None
