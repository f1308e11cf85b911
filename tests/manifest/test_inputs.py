"""Inputs checked for real (issue 11 item 12, and the FIFO of item 10): only regular
files are opened, each is fully decoded, and what the API does not take is named."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import Cli, tiny_image, write_manifest


def job(folder: Path, images: str = "catalog/*") -> None:
    write_manifest(folder, f"""
        version: 1
        defaults: {{model: gpt-image-1, quality: low, size: 1024x1024}}
        tasks:
          - glob: "{images}"
            prompt: Put it on white
        """)


def validate(cli: Cli) -> tuple[int, str]:
    done = cli("validate", "job.yaml", timeout=30)  # a hang fails here, not forever
    assert "Traceback" not in done.stderr
    return done.returncode, done.stderr


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_a_fifo_among_the_inputs_is_named_and_nothing_hangs(tmp_path: Path, cli: Cli) -> None:
    tiny_image(tmp_path / "catalog/shirt.png")
    os.mkfifo(tmp_path / "catalog/pipe.png")
    job(tmp_path)
    code, err = validate(cli)
    assert code == 2
    assert "catalog/pipe.png is a FIFO (named pipe), not a regular file" in err
    done = cli("run", "job.yaml", "--base-url", "http://127.0.0.1:9", timeout=30)
    assert done.returncode == 2 and "FIFO" in done.stderr


def test_a_truncated_jpeg_is_refused(tmp_path: Path, cli: Cli) -> None:
    path = tiny_image(tmp_path / "catalog/cut.jpg", size=64, fmt="JPEG")
    path.write_bytes(path.read_bytes()[:-200])
    job(tmp_path)
    code, err = validate(cli)
    assert code == 2 and "catalog/cut.jpg is damaged or cut short" in err


@pytest.mark.parametrize(("name", "make", "words"), [
    ("cmyk.jpg", lambda p: Image.new("CMYK", (16, 16)).save(p, "JPEG"),
     "is CMYK: convert it to RGB"),
    ("deep.png", lambda p: Image.new("I;16", (16, 16)).save(p, "PNG"),
     "has 16 bits per channel"),
    ("named.jpg", lambda p: Image.new("RGB", (16, 16)).save(p, "PNG"),
     "is a PNG named .jpg: the gateway takes the type from the name, so rename it to .png"),
])
def test_what_the_api_does_not_take_is_named_with_what_to_do(
        tmp_path: Path, cli: Cli, name: str, make: object, words: str) -> None:
    path = tmp_path / "catalog" / name
    path.parent.mkdir()
    make(path)  # type: ignore[operator]
    job(tmp_path)
    code, err = validate(cli)
    assert code == 2 and f"catalog/{name} {words}" in err, err


def test_a_decompression_bomb_gets_a_clear_message(tmp_path: Path, cli: Cli) -> None:
    """A PNG header that claims 20000 x 20000 pixels (a few hundred bytes on disk)."""
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    body = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog/huge.png").write_bytes(body)
    job(tmp_path)
    code, err = validate(cli)
    assert code == 2
    assert "catalog/huge.png has more pixels than imgedit decodes" in err
    assert "decompression-bomb limit): downscale it" in err


def test_a_good_catalog_of_pngs_and_jpegs_passes(tmp_path: Path, cli: Cli) -> None:
    for i in range(3):
        tiny_image(tmp_path / f"catalog/{i}.png")
    tiny_image(tmp_path / "catalog/photo.jpg", fmt="JPEG")
    job(tmp_path)
    assert validate(cli) == (0, "")
