"""Inputs made ready for upload: downscaled and converted per a task's `prepare:` settings.

Owns turning a 12-megapixel photo, a CMYK JPEG or a 16-bit PNG into what the
API wants (8-bit RGB or RGBA, PNG or JPEG, at most `max_side` pixels on the
longest side, upright as the camera's EXIF says), and a cache of the results
beside the ledger (`.imgedit-prepared/`: a dot-folder, so no glob takes them),
named by the original's content hash and the settings: a re-run, or another
manifest asking the same, converts nothing again. A mask stays a PNG with
its transparency and is scaled like its image.

The prepared files are what is uploaded, and they are checked against the
model's limits first (their byte size is only known now); the task, its
fingerprint (original bytes + settings), outputs and sidecar keep the originals.
It never changes an original file and never sends anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from PIL import Image, ImageOps

from pipeline.config.models import Models
from pipeline.errors import PrepareFailed
from pipeline.gateway.client import Answer, Gateway
from pipeline.ledger.durable import write_atomic
from pipeline.ledger.fingerprint import HashCache, content_hash
from pipeline.task import Prepare, Task

CACHE_FOLDER = ".imgedit-prepared"
_KEEP_MODES = {"png": ("RGB", "RGBA", "L", "LA"), "jpeg": ("RGB", "L")}


def cache_folder(ledger_path: Path) -> Path:
    return ledger_path.parent / CACHE_FOLDER


class PreparingGateway(Gateway):
    """The gateway, sending each task with its inputs prepared (a task without `prepare:`
    goes as it is). A failure is a PrepareFailed attempt: nothing left, and retry.py judges
    it like any other."""

    def __init__(self, *args: Any, preparer: Preparer, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.preparer = preparer

    async def edit(self, task: Task, idempotency_key: str, route: str | None = None,
                   ready: Callable[[], Awaitable[object]] | None = None,
                   answered: Callable[[], object] | None = None) -> Answer:
        return await super().edit(await self.preparer(task), idempotency_key, route, ready,
                                  answered)


class Preparer:
    """Prepares each task's inputs once per (content, settings); safe to share by workers."""

    def __init__(self, folder: Path, hashes: HashCache, models: Models,
                 limiter: anyio.CapacityLimiter | None = None):
        self.folder, self.hashes, self.models = folder, hashes, models
        # Two at a time: a decoded 12 MP photo is ~36 MB, and this machine has two cores.
        self.limiter = limiter or anyio.CapacityLimiter(2)

    async def __call__(self, task: Task) -> Task:
        """The task as uploaded: its images and mask replaced by their prepared files."""
        settings = task.prepare
        if settings is None:
            return task
        # Hashes come from the ledger (one thread); decoding and encoding go to a thread.
        try:
            jobs = [(p, self._target(p, settings, mask=p is task.mask), p is task.mask)
                    for p in (*task.images, *((task.mask,) if task.mask else ()))]
        except OSError as exc:  # gone or unreadable since the check pass
            raise PrepareFailed(f"cannot read an input to prepare it: {exc}",
                                terminal=False) from exc
        made: list[Path] = []
        for source, target, mask in jobs:
            made.append(await anyio.to_thread.run_sync(
                _prepared, source, target, settings, mask, limiter=self.limiter))
        images = tuple(made[: len(task.images)])
        upload = dataclasses.replace(task, images=images,
                                     mask=made[-1] if task.mask else None, prepare=None)
        problems = self.models.check(upload)
        if problems:
            raise PrepareFailed("prepared input breaks the model's limits: "
                                + "; ".join(f"{field}: {message}" for field, message in problems))
        return upload

    def _target(self, path: Path, settings: Prepare, *, mask: bool) -> Path:
        digest = content_hash(path, self.hashes)
        how = hashlib.sha256(f"{settings.key()},mask={mask}".encode()).hexdigest()[:12]
        ext = "png" if mask else settings.format or "same"
        return self.folder / digest[:2] / f"{digest}.{how}.{ext}"


def _prepared(source: Path, target: Path, settings: Prepare, mask: bool) -> Path:
    """The prepared file for `source` (made now, or found from an earlier run)."""
    if target.suffix == ".same":  # "keep the format": known only once the file is open
        for ext in (".png", ".jpeg"):
            if target.with_suffix(ext).exists():
                return target.with_suffix(ext)
    elif target.exists():
        return target
    try:
        data, ext = convert(source, settings, mask=mask)
    except Exception as exc:  # a hostile file: Pillow raises many types for corrupt data
        raise PrepareFailed(f"cannot prepare {source}: {exc}") from exc
    if data is None:
        return source  # already as asked: upload the original
    final = target.with_suffix(f".{ext}")
    try:
        write_atomic(final, data)
    except OSError as exc:
        raise PrepareFailed(f"cannot write the prepared file {final}: {exc}",
                            terminal=False) from exc
    return final


def convert(source: Path, settings: Prepare, *, mask: bool = False) -> tuple[bytes | None, str]:
    """The prepared bytes and their format, or (None, format) when the original will do."""
    with Image.open(source) as opened:
        original = (opened.format or "").lower()
        fmt = "png" if mask else settings.format or ("jpeg" if original == "jpeg" else "png")
        side = settings.max_side
        if original == "jpeg" and side:
            opened.draft("RGB", (side, side))  # decode a 12 MP JPEG at 1/2..1/8 scale: faster
        image = ImageOps.exif_transpose(opened)
        oversized = side is not None and max(image.size) > side
        rotated = image is not opened
        if (not oversized and not rotated and fmt == original
                and image.mode in _KEEP_MODES[fmt] and opened.size == image.size):
            return None, fmt
        image = _eight_bit(image, fmt, mask)
        if oversized and side:
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if fmt == "jpeg":
            image.save(out, "JPEG", quality=settings.quality)
        else:
            image.save(out, "PNG")
        return out.getvalue(), fmt


def _eight_bit(image: Image.Image, fmt: str, mask: bool) -> Image.Image:
    """8-bit RGB(A) or grey: CMYK, 16-bit, palette and the like become what the API takes."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if fmt == "jpeg":
        if alpha:  # JPEG has no transparency: put the product on white, not on black
            rgba = image.convert("RGBA")
            white = Image.new("RGB", rgba.size, (255, 255, 255))
            white.paste(rgba, mask=rgba.getchannel("A"))
            return white
        return image if image.mode in _KEEP_MODES["jpeg"] else image.convert("RGB")
    if mask or alpha:
        return image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
    return image if image.mode in _KEEP_MODES["png"] else image.convert("RGB")
