"""An input file, checked for real before anything is sent: a regular file, a whole
image the API takes, under Pillow's decompression-bomb limit.

Owns the one full read of each input: its bytes are hashed and fully decoded
once per content, and the verdict is kept in the ledger beside the hash (through
an InputCache) with the width and height the decode found, so a re-run over an
unchanged catalog opens nothing, and the cost estimate needs no header read.

It never opens anything but a regular file (a FIFO would hang the run while it
holds the lock), never keeps an image in memory past its check, and never writes.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from PIL import Image

from pipeline.config.models import FileFacts, image_shape, sniff_format

OK = "ok"
# Larger files are not decoded here: the model's size limit refuses them anyway.
DECODE_MAX_BYTES = 64 * 1024 * 1024
_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_NOT_TAKEN = {
    "CMYK": "is CMYK: convert it to RGB (sRGB), e.g. `magick in.jpg -colorspace sRGB out.jpg`",
    "I;16": "has 16 bits per channel: save it with 8, e.g. `magick in.png -depth 8 out.png`",
    "I": "has 32-bit integer pixels: save it as 8-bit RGB",
    "F": "has floating-point pixels: save it as 8-bit RGB",
    "LAB": "is in the Lab colour space: convert it to RGB (sRGB)",
    "YCbCr": "is YCbCr: convert it to RGB (sRGB)",
}


Dimensions = tuple[int, int]  # width, height
# What a full check found: format ("" when none), verdict, width and height (None when
# it could not tell, or when the check was made before the ledger kept them).
Known = tuple[str, str, int | None, int | None]


class InputCache(Protocol):
    """What an earlier check found for an unchanged (path, size, mtime). The Ledger is one."""

    def look_up(self, paths: Iterable[Path]) -> None: ...

    def known_input(self, path: Path, size: int, mtime_ns: int) -> Known | None: ...

    def known_content(self, sha256: str) -> Known | None: ...

    def remember_input(self, path: Path, size: int, mtime_ns: int, sha256: str,
                       format: str | None, verdict: str,
                       dimensions: Dimensions | None = None) -> None: ...

    def remember_dimensions(self, path: Path, size: int, mtime_ns: int,
                            dimensions: Dimensions) -> None: ...


def check_input(path: Path, cache: InputCache | None) -> FileFacts | str:
    """What the file is, or a message naming it, saying what is wrong and what to do.
    Raises OSError when it cannot be read (missing, a folder, no permission)."""
    found = os.stat(path)
    if stat.S_ISDIR(found.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(found.st_mode):
        return (f"{path} is {_kind(found.st_mode)}, not a regular file: remove it, or leave"
                " it out of the manifest (a glob entry takes `exclude:`)")
    if found.st_size == 0:
        return f"{path} is empty (0 bytes)"
    known = cache.known_input(path, found.st_size, found.st_mtime_ns) if cache else None
    fmt, verdict, width, height = known if known is not None else _check(path, found, cache)
    problem = _misnamed(path, fmt) if verdict == OK else verdict
    if problem:
        return f"{path} {problem}"
    dimensions = _pair(width, height)
    if dimensions is None and known is not None:
        dimensions = _dimensions_once(path, found, cache)
    return FileFacts(found.st_size, fmt or None, dimensions)


def _check(path: Path, found: os.stat_result, cache: InputCache | None) -> Known:
    """Read the file once: its hash, its format, and what decoding it found (taken from
    another file with the same bytes when the ledger knows one)."""
    data = _read(path)
    sha256 = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data[:16]) or ""
    same = cache.known_content(sha256) if cache is not None else None
    verdict, dimensions = (same[1], _pair(same[2], same[3])) if same else _decoded(data, fmt)
    after = os.stat(path)
    if cache is not None and (after.st_size, after.st_mtime_ns) == (len(data), found.st_mtime_ns):
        cache.remember_input(path, len(data), found.st_mtime_ns, sha256, fmt or None, verdict,
                             dimensions)
    width, height = dimensions or (None, None)
    return fmt, verdict, width, height


def _pair(width: int | None, height: int | None) -> Dimensions | None:
    return (width, height) if width is not None and height is not None else None


def _dimensions_once(path: Path, found: os.stat_result,
                     cache: InputCache | None) -> Dimensions | None:
    """A file checked before the ledger kept sizes: its header, read once and remembered."""
    shape = image_shape(path)
    if shape is None:
        return None
    dimensions = (shape.width, shape.height)
    if cache is not None:
        cache.remember_dimensions(path, found.st_size, found.st_mtime_ns, dimensions)
    return dimensions


def _read(path: Path) -> bytes:
    """The file's bytes, up to one past the cap. Read straight from its descriptor: a
    file object would stat, seek and ask for a terminal on each of 100k small photos."""
    # O_NONBLOCK: should the file have become a FIFO since the stat, open does not wait.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(f"{path} is not a regular file")
        limit = DECODE_MAX_BYTES + 1
        # Asked for its size plus one byte (a sign it grew), not for the cap: a read of
        # 64 MB allocates and maps 64 MB, for each 8 kB photo.
        want = min(found.st_size + 1, limit)
        chunks: list[bytes] = []
        total = 0
        while total < limit and (chunk := os.read(fd, want)):
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < want:
                break  # a short read of a regular file: its end
            want = min(limit - total, 1 << 20)  # it grew since the stat: on, up to the cap
        return b"".join(chunks)
    finally:
        os.close(fd)


def _misnamed(path: Path, fmt: str) -> str | None:
    named = _SUFFIXES.get(path.suffix.lower())
    if named is None or named == fmt:
        return None
    return (f"is a {fmt.upper()} named {path.suffix}: the gateway takes the type from the"
            f" name, so rename it to .{'jpg' if fmt == 'jpeg' else fmt}")


def _decoded(data: bytes, fmt: str) -> tuple[str, Dimensions | None]:
    """OK, or what is wrong with these bytes (no path: the same bytes, the same verdict);
    and the image's width and height when it decoded."""
    if not fmt:
        return "is not a PNG, JPEG or WebP image", None
    if len(data) > DECODE_MAX_BYTES:
        return OK, None  # too large for any model: the model check says so
    if fmt == "png" and len(data) > 24 and data[24] == 16:  # IHDR bit depth
        return _NOT_TAKEN["I;16"], None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                mode, dimensions = image.mode, image.size
                image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        return (f"has more pixels than imgedit decodes ({exc}; Pillow's decompression-bomb"
                " limit): downscale it, e.g. `magick in.jpg -resize 4096x4096 out.jpg`"), None
    except (OSError, SyntaxError, ValueError) as exc:
        return f"is damaged or cut short ({exc}): export or copy it again", None
    problem = _NOT_TAKEN["I;16"] if mode.startswith("I;16") else _NOT_TAKEN.get(mode)
    return problem or OK, dimensions


def preparable(message: str) -> bool:
    """A problem `prepare:` converts away: pixels the API does not take, a misleading name."""
    return any(words in message for words in _NOT_TAKEN.values()) or " named ." in message


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
