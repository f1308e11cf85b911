"""pngcheck.py: a PNG proved whole from its chunks and stream; sound against Pillow's load().

The property that matters: whatever `check_image` passes, Pillow's `load()` decodes.
Valid PNGs of every layout (Pillow's own, and hand-built ones: Adam7 interlace,
16-bit colour, many IDAT chunks, several compress levels) are damaged at random (bytes
flipped, inserted, deleted, cut; also with every CRC made right again, so that the
zlib layer is what breaks) and the property is asserted on each. Hand-built cases show
it is stronger than load(): short rows, a bad filter byte, data after the stream.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.errors import BadResponse
from pipeline.gateway.answer import check_image
from pipeline.gateway.pngcheck import PASSES

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = {0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}


def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def raw_rows(width: int, height: int, depth: int, colour: int, interlaced: bool,
             seed: bytes) -> bytes:
    """Filtered rows of random pixels (any bytes after a filter byte 0-4 decode)."""
    bits = depth * CHANNELS[colour]
    passes = ([(width, height)] if not interlaced else [
        ((width - c + cs - 1) // cs, (height - r + rs - 1) // rs) for c, r, cs, rs in PASSES])
    out = bytearray()
    for columns, rows in passes:
        if columns <= 0 or rows <= 0:
            continue
        for row in range(rows):
            out.append(row % 5)
            row_bytes = (columns * bits + 7) // 8
            out += (seed * (row_bytes // max(len(seed), 1) + 1))[:row_bytes] or bytes(row_bytes)
    return bytes(out)


def built_png(width: int = 13, height: int = 11, depth: int = 8, colour: int = 2, *,
              interlaced: bool = False, level: int = 6, idat_size: int = 0,
              seed: bytes = b"\x10\x80\xff", rows: bytes | None = None,
              palette: bytes = bytes(range(48)) * 16,
              stream: bytes | None = None, transparency: bool = False,
              after: bytes = b"", end: bool = True) -> bytes:
    """A PNG made by hand, so that any layout and any damage to its stream can be had."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    body = chunk(b"IHDR", header)
    if colour == 3:
        body += chunk(b"PLTE", palette)
    if transparency:
        body += chunk(b"tRNS", b"\x00\x80" if colour == 3 else b"\x00\x01" * CHANNELS[colour])
    if stream is None:
        if rows is None:
            rows = raw_rows(width, height, depth, colour, interlaced, seed)
        stream = zlib.compress(rows, level)
    size = idat_size or len(stream) or 1
    for start in range(0, max(len(stream), 1), size):
        body += chunk(b"IDAT", stream[start:start + size])
    return b"\x89PNG\r\n\x1a\n" + body + after + (chunk(b"IEND", b"") if end else b"")


def pillow_png(mode: str, size: tuple[int, int], level: int, transparency: bool) -> bytes:
    image = Image.effect_noise(size, 60).convert(mode if mode != "I;16" else "I")
    if mode == "I;16":
        image = image.convert("I;16")
    extra = {"transparency": 3} if transparency and mode in ("P", "L", "RGB") else {}
    if mode == "RGB" and extra:
        extra = {"transparency": (3, 3, 3)}
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=level, **extra)
    return out.getvalue()


def pillow_loads(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # any failure of Pillow's is a failed load here
        return False
    return True


def passes(data: bytes) -> bool:
    try:
        check_image(data)
    except BadResponse:
        return False
    return True


def fix_crcs(data: bytes) -> bytes:
    """Every chunk's CRC made right again, as far as the chunk lengths still hold."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        length = struct.unpack(">I", out[pos:pos + 4])[0]
        if pos + 12 + length > len(out):
            break
        crc = zlib.crc32(bytes(out[pos + 4:pos + 8 + length])) & 0xFFFFFFFF
        out[pos + 8 + length:pos + 12 + length] = struct.pack(">I", crc)
        pos += 12 + length
    return bytes(out)


# --- valid images pass, in every layout ---------------------------------------------------

LAYOUT = st.sampled_from([(d, c) for c, depths in DEPTHS.items() for d in depths])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize("transparency", [False, True])
def test_pillows_own_pngs_pass_in_every_mode(mode: str, transparency: bool) -> None:
    data = pillow_png(mode, (37, 23), 6, transparency)
    assert check_image(data) == (data, "png")


@settings(max_examples=150, deadline=None)
@given(layout=LAYOUT, width=st.integers(1, 40), height=st.integers(1, 40),
       interlaced=st.booleans(), level=st.integers(0, 9), idat_size=st.integers(0, 300),
       seed=st.binary(max_size=8), transparency=st.booleans())
def test_any_well_formed_layout_passes_and_loads(layout: tuple[int, int], width: int,
                                                 height: int, interlaced: bool, level: int,
                                                 idat_size: int, seed: bytes,
                                                 transparency: bool) -> None:
    depth, colour = layout
    data = built_png(width, height, depth, colour, interlaced=interlaced, level=level,
                     idat_size=idat_size, seed=seed, transparency=transparency)
    assert pillow_loads(data)
    assert passes(data)


# --- soundness: whatever passes, Pillow loads ---------------------------------------------

@st.composite
def valid_pngs(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return pillow_png(draw(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])),
                          (draw(st.integers(1, 30)), draw(st.integers(1, 30))),
                          draw(st.integers(0, 9)), draw(st.booleans()))
    depth, colour = draw(LAYOUT)
    return built_png(draw(st.integers(1, 20)), draw(st.integers(1, 20)), depth, colour,
                     interlaced=draw(st.booleans()), level=draw(st.integers(0, 9)),
                     idat_size=draw(st.integers(0, 200)), seed=draw(st.binary(max_size=6)),
                     transparency=draw(st.booleans()))


DAMAGE = st.sampled_from(["flip", "insert", "delete", "truncate"])
LAYER = st.sampled_from(["file", "file, CRCs made right", "rows, recompressed"])


def damaged(data: bytes, damage: str, where: float, junk: bytes) -> bytes:
    at = min(int(where * len(data)), len(data) - 1) if data else 0
    if damage == "flip" and data:
        return data[:at] + bytes([data[at] ^ (junk[0] or 1)]) + data[at + 1:]
    if damage == "insert":
        return data[:at] + junk + data[at:]
    if damage == "delete":
        return data[:at] + data[at + len(junk):]
    return data[:at]


def restreamed(data: bytes, damage: str, where: float, junk: bytes) -> bytes:
    """The rows inflated, damaged and compressed again into one IDAT: every checksum
    holds, and what is wrong is the rows' count, length or filter bytes."""
    pos, before, stream, after = 8, b"", b"", b""
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        whole, kind = data[pos:pos + 12 + length], data[pos + 4:pos + 8]
        if kind == b"IDAT":
            stream += data[pos + 8:pos + 8 + length]
        elif stream:
            after += whole
        else:
            before += whole
        pos += 12 + length
    rows = damaged(zlib.decompress(stream), damage, where, junk)
    return data[:8] + before + chunk(b"IDAT", zlib.compress(rows)) + after


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_pngs(), damage=DAMAGE, layer=LAYER, where=st.floats(0, 1),
       junk=st.binary(min_size=1, max_size=12))
def test_whatever_passes_the_check_loads_in_pillow(data: bytes, damage: str, layer: str,
                                                   where: float, junk: bytes) -> None:
    if layer == "rows, recompressed":
        bad = restreamed(data, damage, where, junk)
    else:
        bad = damaged(data, damage, where, junk)
        if layer == "file, CRCs made right":  # what breaks is the zlib layer or the rows
            bad = fix_crcs(bad)
    if passes(bad):
        assert pillow_loads(bad)


# --- stronger than load(): cases made by hand ---------------------------------------------

def test_fewer_rows_than_the_header_fail_though_pillow_loads_them() -> None:
    short = built_png(16, 16, rows=raw_rows(16, 10, 8, 2, False, b"\x33"))
    assert pillow_loads(short)  # Pillow stops at the stream's end and leaves rows blank
    with pytest.raises(BadResponse, match="png image is corrupt: its pixel data is 490 "
                                          "bytes; its header needs 784"):
        check_image(short)


def test_a_bad_filter_byte_fails() -> None:
    rows = bytearray(raw_rows(8, 8, 8, 0, False, b"\x01"))
    rows[9 * 5] = 7  # the sixth row's filter type
    with pytest.raises(BadResponse, match="filter type other than 0-4"):
        check_image(built_png(8, 8, 8, 0, rows=bytes(rows)))


def test_a_bad_filter_byte_in_an_interlaced_pass_fails() -> None:
    rows = bytearray(raw_rows(9, 9, 8, 2, True, b"\x01"))
    rows[-1 - 27] = 9  # the last row's filter type (9 pixels x 3 bytes after it)
    with pytest.raises(BadResponse, match="filter type other than 0-4"):
        check_image(built_png(9, 9, 8, 2, interlaced=True, rows=bytes(rows)))


def test_data_after_the_compressed_stream_fails() -> None:
    stream = zlib.compress(raw_rows(8, 8, 8, 2, False, b"\x05")) + b"\x00junk"
    data = built_png(8, 8, stream=stream)
    assert pillow_loads(data)  # Pillow ignores it
    with pytest.raises(BadResponse, match="data follows the end of its compressed stream"):
        check_image(data)


def test_more_rows_than_the_header_fail() -> None:
    with pytest.raises(BadResponse, match="runs past the 200 bytes"):
        check_image(built_png(8, 8, 8, 2, rows=raw_rows(8, 12, 8, 2, False, b"\x05")))


def test_a_stream_cut_short_fails() -> None:
    stream = zlib.compress(raw_rows(8, 8, 8, 2, False, b"\x05"), 0)
    with pytest.raises(BadResponse, match="compressed stream stops after"):
        check_image(built_png(8, 8, stream=stream[:-30]))


def test_a_missing_iend_fails() -> None:
    with pytest.raises(BadResponse, match="without an IEND chunk"):
        check_image(built_png(end=False))


def test_a_bad_crc_fails() -> None:
    data = bytearray(built_png())
    data[data.index(b"IDAT") + 10] ^= 0xFF
    with pytest.raises(BadResponse, match="IDAT chunk at byte 33 fails its CRC"):
        check_image(bytes(data))


def test_idat_chunks_apart_fail() -> None:
    good = built_png(idat_size=20)
    first_end = good.index(b"IDAT") + 4 + 20 + 4
    spliced = good[:first_end] + chunk(b"teXt", b"x") + good[first_end:]
    with pytest.raises(BadResponse, match="IDAT chunks are not consecutive"):
        check_image(spliced)


def test_a_chunk_pillow_parses_after_the_pixels_is_left_to_pillow() -> None:
    """A broken gAMA after the IDATs: the stream is whole, but Pillow's load() reads the
    chunk and refuses it; the check hands such files to load() and so refuses it too."""
    data = built_png(after=chunk(b"gAMA", b"\x00\x01"))
    assert not pillow_loads(data)
    with pytest.raises(BadResponse, match="png image is corrupt"):
        check_image(data)


def test_unknown_chunks_after_the_pixels_and_bytes_after_iend_pass() -> None:
    data = built_png(after=chunk(b"prVt", b"private")) + b"trailing bytes"
    assert pillow_loads(data)
    assert passes(data)


def test_a_palette_pillow_cannot_use_is_left_to_pillow() -> None:
    """300 palette entries: the stream is whole, but Pillow's load() refuses the palette
    when it realizes it; a palette image goes through load() as well, and so fails."""
    data = built_png(8, 8, 8, 3, palette=bytes(900))
    assert not pillow_loads(data)
    with pytest.raises(BadResponse, match="png image is corrupt"):
        check_image(data)
