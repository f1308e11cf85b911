"""A PNG answer proved whole from its chunks and its compressed stream, without decoding it.

Owns the pixel check of a PNG (`check_png`): cheaper and stronger than Pillow's
`load()`. Pillow has already parsed the header (size, mode, palette) when it runs;
this walks every chunk itself: each length within the data, each CRC right, one IHDR
first, the IDAT chunks in one run, IEND present (a truncated answer fails). The IDAT
stream is inflated in bounded pieces (memory stays small whatever the image) and must
give exactly the bytes the header implies (rows of `1 + ceil(width x bits / 8)`, or
the sum of the seven Adam7 passes), every row's filter byte 0..4, and end with nothing
after it. Filters are bijections on bytes, so such a stream decodes to pixels.

Inflating with `max_length` pieces costs ~1.5 ms on a flat 1024x1024 RGB answer where
`load()` costs ~5 ms, and it refuses what `load()` lets through: a stream that ends
rows early (Pillow stops at the end of the zlib data and keeps the rest blank).
The inflating and the CRCs are zlib-ng's (python-zlib-ng, the same API as `zlib`):
it inflates the simulator's flat answer in 0.58 ms where zlib takes 1.95, and a
noisy 2.4 MB photo in 9.6 ms where zlib takes 12.9; it gives the same bytes.

Sound by construction: what passes here also passes `load()`. Where Pillow's load
does work this module does not repeat (a palette to realize, an animation, a chunk
after the pixels that Pillow parses, a tile other than the plain one), `check_png`
says so and the caller runs `load()` as well. Bytes after IEND are ignored, as every
decoder does. Never keeps the pixels, never raises anything but `CorruptPng`.
"""

from __future__ import annotations

from collections.abc import Iterator

from PIL import PngImagePlugin
from zlib_ng import zlib_ng as zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIECE = 256 * 1024  # inflated bytes per step: the memory this check takes
FEED = 64 * 1024  # compressed bytes per step: bounds the copy zlib makes of what is left
MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk's length
# (bit depth, colour type) -> Pillow's raw mode for it, and bits per pixel: the row size
# Pillow's zip decoder expects (PngImagePlugin._MODES and Unpack.c agree).
LAYOUTS = {
    (1, 0): ("1", 1), (2, 0): ("L;2", 2), (4, 0): ("L;4", 4), (8, 0): ("L", 8),
    (16, 0): ("I;16B", 16), (8, 2): ("RGB", 24), (16, 2): ("RGB;16B", 48),
    (1, 3): ("P;1", 1), (2, 3): ("P;2", 2), (4, 3): ("P;4", 4), (8, 3): ("P", 8),
    (8, 4): ("LA", 16), (16, 4): ("LA;16B", 32), (8, 6): ("RGBA", 32),
    (16, 6): ("RGBA;16B", 64),
}
# Adam7: (first column, first row, column step, row step) of each pass
PASSES = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
          (1, 0, 2, 2), (0, 1, 1, 2)]
LETTERS = frozenset(range(65, 91)) | frozenset(range(97, 123))


class CorruptPng(ValueError):
    """What is wrong with the PNG, in a few words."""


def check_png(data: bytes, image: PngImagePlugin.PngImageFile) -> bool:
    """Raise CorruptPng unless `data` (opened by Pillow as `image`, its header checked)
    holds a whole, well-formed image. Return True when Pillow's `load()` must still run
    for the parts this check does not cover (see the module docstring)."""
    view = memoryview(data)
    chunks = list(_chunks(view))
    kinds = [kind for kind, _, _ in chunks]
    if not kinds or kinds[0] != b"IHDR" or len(chunks[0][2]) != 13:
        raise CorruptPng("its first chunk is no IHDR of 13 bytes")
    if kinds.count(b"IHDR") > 1:
        raise CorruptPng("it has two IHDR chunks")
    if b"IDAT" not in kinds:
        raise CorruptPng("it has no IDAT chunk")
    first = kinds.index(b"IDAT")
    last = first
    while last + 1 < len(kinds) and kinds[last + 1] == b"IDAT":
        last += 1
    if b"IDAT" in kinds[last + 1:]:
        raise CorruptPng("its IDAT chunks are not consecutive")
    width, height, bits, interlaced, rawmode = _header(bytes(chunks[0][2]))
    if image.size != (width, height):
        raise CorruptPng(f"its IHDR says {width}x{height}, Pillow read {image.size}")
    _inflate((body for _, _, body in chunks[first:last + 1]),
             _rows(width, height, bits, interlaced))
    after = kinds[last + 1:]
    plain_tile = [tuple(image.tile[0])] if len(image.tile) == 1 else None
    plain = plain_tile == [("zip", (0, 0, width, height), chunks[first][1], rawmode)]
    return (not plain or image.mode == "P" or b"acTL" in kinds
            or any(kind != b"IEND" and _pillow_reads(kind) for kind in after))


def _chunks(view: memoryview) -> Iterator[tuple[bytes, int, memoryview]]:
    """(type, offset of its data, data) of each chunk up to IEND, each checked."""
    if view[:8] != SIGNATURE:
        raise CorruptPng("it does not start with the PNG signature")
    pos, end = 8, len(view)
    while True:
        if pos + 8 > end:
            raise CorruptPng(f"it ends at byte {end} without an IEND chunk (truncated?)")
        length = int.from_bytes(view[pos:pos + 4])
        kind = bytes(view[pos + 4:pos + 8])
        if not LETTERS.issuperset(kind):
            raise CorruptPng(f"a chunk at byte {pos} has the type {kind!r}, not 4 letters")
        if length > MAX_CHUNK or pos + 12 + length > end:
            raise CorruptPng(f"its {kind.decode()} chunk at byte {pos} claims {length} "
                             f"bytes; the data ends first (truncated?)")
        body = view[pos + 8:pos + 8 + length]
        crc = int.from_bytes(view[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise CorruptPng(f"its {kind.decode()} chunk at byte {pos} fails its CRC")
        yield kind, pos + 8, body
        if kind == b"IEND":
            return
        pos += 12 + length


def _header(ihdr: bytes) -> tuple[int, int, int, bool, str]:
    """Width, height, bits per pixel, interlaced, and Pillow's raw mode, from IHDR."""
    width, height = int.from_bytes(ihdr[0:4]), int.from_bytes(ihdr[4:8])
    depth, colour, compression, filtering, interlace = ihdr[8:13]
    if width < 1 or height < 1:
        raise CorruptPng(f"it is {width}x{height}: an empty image")
    if (depth, colour) not in LAYOUTS:
        raise CorruptPng(f"bit depth {depth} with colour type {colour} is no PNG layout")
    if compression or filtering or interlace > 1:
        raise CorruptPng(f"unknown compression, filter or interlace method "
                         f"({compression}, {filtering}, {interlace})")
    rawmode, bits = LAYOUTS[(depth, colour)]
    return width, height, bits, interlace == 1, rawmode


def _rows(width: int, height: int, bits: int, interlaced: bool) -> list[tuple[int, int]]:
    """(rows, bytes per row with its filter byte) of each non-empty pass, in order."""
    if not interlaced:
        return [(height, 1 + (width * bits + 7) // 8)]
    passes = []
    for column, row, column_step, row_step in PASSES:
        columns = (width - column + column_step - 1) // column_step
        rows = (height - row + row_step - 1) // row_step
        if columns > 0 and rows > 0:  # an empty pass has no rows, not empty ones
            passes.append((rows, 1 + (columns * bits + 7) // 8))
    return passes


def _inflate(bodies: Iterator[memoryview], passes: list[tuple[int, int]]) -> None:
    """Inflate the IDAT stream piece by piece, checking its size and filter bytes."""
    expected = sum(rows * stride for rows, stride in passes)
    filters = _FilterBytes(passes)
    stream = zlib.decompressobj()
    done = 0
    try:
        for body in bodies:
            for start in range(0, len(body), FEED):
                pending: bytes | memoryview = body[start:start + FEED]
                while pending:
                    if stream.eof:
                        raise CorruptPng("data follows the end of its compressed stream")
                    piece = stream.decompress(pending, PIECE)
                    done = filters.check(piece, done, expected)
                    pending = stream.unconsumed_tail
        while not stream.eof:  # what zlib still holds once every byte went in
            piece = stream.decompress(b"", PIECE)
            if not piece:
                break
            done = filters.check(piece, done, expected)
    except zlib.error as exc:  # type: ignore[misc]  # zlib-ng's stub says an instance
        raise CorruptPng(f"its compressed stream is broken ({exc})") from exc
    if not stream.eof:
        raise CorruptPng(f"its compressed stream stops after {done} of {expected} bytes "
                         "(truncated?)")
    if stream.unused_data:
        raise CorruptPng("data follows the end of its compressed stream")
    if done != expected:
        raise CorruptPng(f"its pixel data is {done} bytes; its header needs {expected}")


class _FilterBytes:
    """Where each row's filter byte falls in the inflated stream, checked as it streams."""

    def __init__(self, passes: list[tuple[int, int]]) -> None:
        self.spans = []  # (start, end, stride) of each pass in the stream
        start = 0
        for rows, stride in passes:
            self.spans.append((start, start + rows * stride, stride))
            start += rows * stride

    def check(self, piece: bytes, done: int, expected: int) -> int:
        """Check the filter bytes in `piece` (at offset `done`); return the new offset."""
        end = done + len(piece)
        if end > expected:
            raise CorruptPng(f"its pixel data runs past the {expected} bytes its header "
                             "needs")
        for first, last, stride in self.spans:
            low, high = max(first, done), min(last, end)
            if low >= high:
                continue
            at = first + -(-(low - first) // stride) * stride  # first row start >= low
            if at < high and max(piece[at - done:high - done:stride]) > 4:
                raise CorruptPng("a row has a filter type other than 0-4")
        return end


def _pillow_reads(kind: bytes) -> bool:
    """Whether Pillow parses this chunk type (and so may refuse it) after the pixels."""
    return hasattr(PngImagePlugin.PngStream, "chunk_" + kind.decode("ascii"))
