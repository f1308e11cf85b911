"""The simulator's real edit: Pillow decodes the inputs, composes, tints, masks and encodes.

It owns decoding and checking the uploaded images (an unreadable one, or a
mask that does not fit the first image, is a 400), laying the inputs out on a
canvas of the requested size, tinting it towards the prompt's colour where the
mask is transparent, encoding PNG / JPEG / WebP, and the cache of rendered
outputs, so a benchmark repeating work does not pay for Pillow twice.

It must never touch the network, the disk or the event loop: every function
here is synchronous and CPU-bound, and the gateway runs it in a worker thread.
It never decides what answer a request gets (faults, modes, counters):
that is `simulator.py`'s.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageOps
from PIL.Image import Resampling

from pipeline.simulator.request import Edit, GatewayError, Part
from pipeline.task import IMAGE_FORMATS

COLOURS = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (220, 30, 30), "green": (30, 160, 60),
    "blue": (30, 80, 220), "navy": (20, 30, 90), "yellow": (240, 210, 40),
    "orange": (245, 140, 20), "purple": (130, 50, 160), "pink": (240, 130, 180),
    "grey": (128, 128, 128), "gray": (128, 128, 128), "brown": (120, 75, 40),
    "beige": (225, 210, 180), "teal": (0, 128, 128), "gold": (212, 175, 55),
    "白": (255, 255, 255), "黑": (0, 0, 0), "红": (220, 30, 30), "绿": (30, 160, 60),
    "蓝": (30, 80, 220), "黄": (240, 210, 40),
}
TINT = 0.5  # how far an edited pixel moves towards the prompt's colour
CACHE_SIZE = 256  # rendered outputs kept, so a benchmark repeating work does not re-render


def open_image(part: Part, param: str) -> Image.Image:
    if part.content_type not in IMAGE_FORMATS.values():
        raise GatewayError(400, f"Invalid file '{param}': unsupported mimetype "
                           f"('{part.content_type}'); use image/png, image/jpeg or image/webp.",
                           param=param, code="unsupported_file_mimetype")
    try:
        picture = Image.open(BytesIO(part.data))
        picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise GatewayError(400, f"Invalid file '{param}': {part.filename!r} is not a readable "
                           "image.", param=param, code="invalid_image") from None
    return picture


def open_inputs(edit: Edit) -> tuple[list[Image.Image], Image.Image | None]:
    """Decode every input (an unreadable one is a 400); the mask must match the first image."""
    pictures = [open_image(part, "image") for part in edit.images]
    mask = open_image(edit.mask, "mask") if edit.mask else None
    if mask is not None and mask.size != pictures[0].size:
        raise GatewayError(400, f"The mask is {mask.width}x{mask.height} but the first image is "
                           f"{pictures[0].width}x{pictures[0].height}.", param="mask")
    return pictures, mask


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The first colour word in the prompt, else a colour only this prompt gets."""
    lowered = prompt.lower()
    found = [(m.start(), word) for word in COLOURS
             if (m := re.search(rf"\b{word}\b" if word.isascii() else word, lowered))]
    if found:
        return COLOURS[min(found)[1]]
    red, green, blue = hashlib.sha256(prompt.encode()).digest()[:3]
    return red, green, blue


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: str  # png | jpeg | webp
    b64: str
    inputs: tuple[tuple[int, int], ...] = ()  # each input's width and height, for `usage`

    @property
    def content_type(self) -> str:
        return IMAGE_FORMATS[self.format]


def render(edit: Edit, pictures: list[Image.Image], mask: Image.Image | None) -> Rendered:
    """Inputs side by side on the canvas, tinted; outside the mask's hole the original stays."""
    width, height = edit.size
    transparent = edit.background == "transparent" and edit.output_format != "jpeg"
    canvas = Image.new("RGBA", edit.size, (255, 255, 255, 0 if transparent else 255))
    cell = width // len(pictures)
    boxes = []
    for i, picture in enumerate(pictures):
        # Blocks when enlarging: crisp, and a quarter of the PNG encoding time of smooth ramps.
        enlarging = picture.width < cell and picture.height < height
        resample = Resampling.NEAREST if enlarging else Resampling.BILINEAR
        fitted = ImageOps.contain(picture.convert("RGBA"), (cell, height), resample)
        boxes.append((i * cell + (cell - fitted.width) // 2, (height - fitted.height) // 2, fitted))
        canvas.paste(fitted, boxes[-1][:2], fitted)
    colour = Image.new("RGB", edit.size, prompt_colour(edit.prompt))
    edited = Image.blend(canvas.convert("RGB"), colour, TINT)
    edited.putalpha(canvas.getchannel("A"))
    if mask is not None:
        # OpenAI edits where the mask is fully transparent; the mask belongs to the first image.
        hole = mask.convert("RGBA").getchannel("A").point(lambda a: 255 if a == 0 else 0)
        x, y, fitted = boxes[0]
        area = Image.new("L", edit.size, 0)
        area.paste(hole.resize(fitted.size, Resampling.NEAREST), (x, y))
        edited = Image.composite(edited, canvas, area)
    if not transparent:
        edited = edited.convert("RGB")
    out = BytesIO()
    if edit.output_format == "png":
        edited.save(out, "PNG", compress_level=1)  # speed over size: it only crosses loopback
    else:
        quality = edit.compression or (90 if edit.output_format == "jpeg" else 80)
        edited.save(out, edit.output_format.upper(), quality=quality, method=0)
    data = out.getvalue()
    return Rendered(data, edit.output_format, base64.b64encode(data).decode(),
                    tuple(p.size for p in pictures))


class RenderCache:
    """The last CACHE_SIZE outputs by `Edit.render_key`; the oldest stored goes first."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._kept: OrderedDict[Hashable, Rendered] = OrderedDict()

    def get(self, key: Hashable) -> Rendered | None:
        return self._kept.get(key)

    def put(self, key: Hashable, rendered: Rendered) -> None:
        self._kept[key] = rendered
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)
