"""Small preview images for the report: made once per (file, size, mtime), then reused.

A thumbnail's name is a hash of its source's resolved path, size and mtime (and
of the thumbnail settings), so a second report over unchanged files only stats
them, and a changed file gets a new name instead of a stale picture.

Making them is parallel-safe: each one is written by `durable.write_atomic` (a
temporary name, then a rename), so two reports writing the same thumbnail at once
both end with a whole file, and an interrupted one leaves only a stray temp file
that the next report removes. No fsync: a thumbnail is a cache that the next
report can always make again, and syncing 5,000 of them would cost more than
making them.

It never modifies, moves or re-encodes a source image, and never raises for an
unreadable one: that source simply has no thumbnail.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.ledger.durable import is_temp_name, write_atomic

THUMB_PX = 160  # longest side, in pixels
QUALITY = 80
METHOD = 2  # WEBP effort: 4 would make files ~7% smaller for twice the encoding time
_VERSION = 1  # bump when the way thumbnails look changes, to remake them all
_SUFFIX = ".webp"
_NAME = re.compile(r"^[0-9a-f]{24}\.webp$")

log = logging.getLogger(__name__)


def thumb_name(source: Path, px: int = THUMB_PX) -> str | None:
    """The thumbnail's file name for `source` as it is now; None when it cannot be read."""
    try:
        resolved = source.resolve()
        st = resolved.stat()
    except OSError:
        return None
    key = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}\0v{_VERSION}/{px}/{QUALITY}/{METHOD}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24] + _SUFFIX


def make_thumbnail(source: Path, target: Path, px: int = THUMB_PX) -> bool:
    """Write a ≤ px WEBP of `source` at `target` (atomically). False when it cannot be read."""
    try:
        with Image.open(source) as image:
            image.thumbnail((px, px))  # uses JPEG draft mode: decodes big JPEGs at 1/8 scale
            small = ImageOps.exif_transpose(image)
            small = small.convert("RGBA" if _has_alpha(small) else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    encoded = io.BytesIO()  # a few KB: THUMB_PX on its longest side
    small.save(encoded, "WEBP", quality=QUALITY, method=METHOD)
    write_atomic(target, encoded.getvalue(), sync=False)
    return True


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )


class Thumbnails:
    """The thumbs folder of one report: which sources have a thumbnail, and making the rest."""

    def __init__(self, folder: Path, px: int = THUMB_PX, workers: int | None = None):
        self.folder = folder
        self.px = px
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._names: dict[Path, str | None] = {}
        self.made = 0
        self.reused = 0

    def name(self, source: Path) -> str | None:
        """The thumbnail name `source` will have (stat only; memoised per report)."""
        if source not in self._names:
            self._names[source] = thumb_name(source, self.px)
        return self._names[source]

    def ensure(self, sources: Iterable[Path]) -> dict[Path, str]:
        """Make the thumbnails that are missing, in parallel; source → name of those that exist.

        Sources that cannot be read are left out of the answer.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        wanted = {s: n for s in dict.fromkeys(sources) if (n := self.name(s)) is not None}
        # An empty file is what a crash can leave after os.replace without fsync: remake it.
        existing = {e.name for e in os.scandir(self.folder) if e.is_file() and e.stat().st_size}
        missing = {s: n for s, n in wanted.items() if n not in existing}
        self.reused = len(wanted) - len(missing)
        # Pillow releases the GIL while it decodes, resizes and encodes: threads run in parallel.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            made = dict(zip(
                missing,
                pool.map(lambda s: make_thumbnail(s, self.folder / missing[s], self.px), missing),
                strict=True,
            ))
        self.made = sum(made.values())
        log.info("thumbnails: %d made, %d reused, %d unreadable, in %.1f s (%s)", self.made,
                 self.reused, len(missing) - self.made, time.time() - started, self.folder)
        self._prune(set(wanted.values()), started)
        return {s: n for s, n in wanted.items() if made.get(s, True)}

    def _prune(self, keep: set[str], started: float) -> None:
        """Remove thumbnails of files that changed or left the report, and stray temp files.

        Only files made before this report started: a report running at the same time
        over newer files keeps the thumbnails it just made.
        """
        for entry in os.scandir(self.folder):
            ours = _NAME.match(entry.name) or is_temp_name(entry.name)
            if not ours or entry.name in keep:
                continue
            try:
                if entry.stat().st_mtime < started - 60:
                    os.unlink(entry.path)
            except OSError:
                pass  # gone already: another report pruned it
