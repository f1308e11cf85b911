"""The `usage` a gpt-image answer carries, counted as OpenAI bills image edits.

Output: tokens by quality for a 1024x1024 image (low 272, medium 1056, high 4160),
in proportion for other sizes, times n. Input: the prompt at about four characters
a token, and each input image at 65 tokens plus 129 per 512-px tile, after the image
is fitted into 2048x2048 and its short side brought down to 512.

Written here on its own, not shared with the client's estimate: the two must agree
because both follow OpenAI, not because one reads the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
IMAGE_BASE, IMAGE_TILE, TILE = 65, 129, 512


def image_tokens(width: int, height: int) -> int:
    fit = min(1.0, 2048 / max(width, height))
    wide, high = width * fit, height * fit
    short = min(1.0, TILE / min(wide, high))
    tiles = math.ceil(wide * short / TILE) * math.ceil(high * short / TILE)
    return IMAGE_BASE + IMAGE_TILE * tiles


def usage(prompt: str, quality: str | None, size: tuple[int, int], n: int,
          inputs: Sequence[tuple[int, int]]) -> dict[str, Any]:
    text_tokens = len(prompt) // 4 + 1
    picture_tokens = sum(image_tokens(w, h) for w, h in inputs)
    per_square = OUTPUT_TOKENS.get(quality or "auto", OUTPUT_TOKENS["auto"])
    out = per_square * size[0] * size[1] // (1024 * 1024) * n
    details = {"text_tokens": text_tokens, "image_tokens": picture_tokens}
    return {"input_tokens": text_tokens + picture_tokens, "output_tokens": out,
            "total_tokens": text_tokens + picture_tokens + out,
            "input_tokens_details": details}
