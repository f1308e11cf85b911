"""What one task will cost, before it is sent: the estimate behind `validate` and --max-cost.

Token-priced models (gpt-image) are estimated as OpenAI bills them: output tokens by
quality for a 1024x1024 image, in proportion for other sizes, times n; input tokens
for the prompt (about four characters a token) and for each input image (a base
plus a count per 512-pixel tile, once the image is fitted into 2048x2048 with its
short side at most 512, read from the file's header). Other models cost a price
per image from the table. It never decodes pixels and never sends anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pipeline.task import Task


class ModelSpec(Protocol):
    """What of a model's spec (config/models.py) the estimate reads."""

    @property
    def output_tokens(self) -> Mapping[str, int] | None: ...
    @property
    def input_image_tokens(self) -> Mapping[str, int] | None: ...
    @property
    def usage_price(self) -> Mapping[str, float] | None: ...


SQUARE = 1024 * 1024
DEFAULT_SIDE = 1024  # "auto" or an unknown size: priced as a 1024x1024 image
Dimensions = Callable[[Path], "tuple[int, int] | None"]


def pixels(size: Any) -> int:
    width, _, height = str(size or "").partition("x")
    if width.isdigit() and height.isdigit():
        return int(width) * int(height)
    return DEFAULT_SIDE * DEFAULT_SIDE


def image_tokens(rule: Mapping[str, int], width: int, height: int) -> int:
    """A base and a count per 512-px tile, after fitting into 2048x2048, short side <= 512."""
    fit = min(1.0, 2048 / max(width, height))
    wide, high = width * fit, height * fit
    short = min(1.0, 512 / min(wide, high))
    tiles = math.ceil(wide * short / 512) * math.ceil(high * short / 512)
    return int(rule.get("base", 0)) + int(rule.get("tile", 0)) * tiles


def prompt_tokens(prompt: str) -> int:
    return len(prompt) // 4 + 1


def token_estimate(spec: ModelSpec, task: Task, dimensions: Dimensions) -> float:
    """USD for one task of a token-priced model, input images and prompt included."""
    assert spec.output_tokens is not None and spec.usage_price is not None
    quality = task.fields.get("quality")
    per_square = spec.output_tokens.get(str(quality)) if quality else None
    if per_square is None:  # auto or unknown: the dearest, so the estimate is never low
        per_square = max(spec.output_tokens.values())
    output = per_square * pixels(task.fields.get("size")) / SQUARE * task.n
    inputs = prompt_tokens(task.prompt)
    for path in task.images:
        shape = dimensions(path) or (DEFAULT_SIDE, DEFAULT_SIDE)
        inputs += image_tokens(spec.input_image_tokens or {}, *shape)
    price = spec.usage_price
    return (output * price.get("output_tokens", 0.0)
            + inputs * price.get("input_tokens", 0.0)) / 1_000_000
