"""Benchmark catalogs: many tiny, identical input files and a manifest over them.

Every input holds the same bytes and every task the same prompt, so the
simulator renders once and answers the rest from its cache: what is measured
is the client, not Pillow in the simulator. File names differ, so each task is
its own task to imgedit (own id, own output, own ledger row) and to the SDK
script (own request, own file).

Inputs are JPEGs and outputs PNGs (`{stem}.edited.png` beside each input, the
manifest's default), so the glob `**/*.jpg` never picks up an earlier output,
as in the shipped demo.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Final

from PIL import Image

# Final: literal types, which the openai SDK's typed signature wants.
MODEL: Final = "gpt-image-1"
SIZE: Final = "1024x1024"
QUALITY: Final = "low"
PROMPT = "Put the product on a pure white background with a soft shadow"
PER_FOLDER = 1000  # like a catalog split by category; also keeps each listing small
GLOB = "catalog/**/*.jpg"


def tiny_jpeg(side: int = 8) -> bytes:
    picture = Image.new("RGB", (side, side), (200, 40, 40))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=80)
    return out.getvalue()


def input_paths(root: Path, count: int) -> list[Path]:
    return [root / "catalog" / f"c{i // PER_FOLDER:04d}" / f"sku-{i:06d}.jpg"
            for i in range(count)]


def make_catalog(root: Path, count: int, side: int = 8) -> Path:
    """`count` identical JPEGs under root/catalog/cNNNN/, and root/bench.yaml over them."""
    data = tiny_jpeg(side)
    made: set[Path] = set()
    for path in input_paths(root, count):
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return write_manifest(root)


def write_manifest(root: Path) -> Path:
    manifest = root / "bench.yaml"
    manifest.write_text(
        "version: 1\n"
        "provider: openai  # --base-url points it at the simulator\n"
        "defaults:\n"
        f"  model: {MODEL}\n"
        f"  quality: {QUALITY}\n"
        f"  size: {SIZE}\n"
        "tasks:\n"
        f"  - glob: \"{GLOB}\"\n"
        f"    prompt: {PROMPT}\n",
        encoding="utf-8",
    )
    return manifest
