"""`imgedit init`'s manifest: what it finds in a folder, and that it loads as written."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from pipeline.config.models import Models
from pipeline.manifest import starter
from pipeline.manifest.load import load
from pipeline.manifest.preflight import check_all
from tests.conftest import image


def test_survey_counts_kinds_in_any_case_and_skips_results_and_dot_folders(
        tmp_path: Path) -> None:
    for name in ("a.JPG", "b.jpeg", "sub/c.png", "d.webp", "a.edited.png", ".cache/x.png",
                 "notes.txt"):
        image(tmp_path / name, fmt="PNG")
    kinds, large = starter.survey(tmp_path)
    assert dict(kinds) == {"jpg": 2, "png": 1, "webp": 1} and large == 0


def test_a_large_photo_turns_prepare_on_and_the_manifest_checks(tmp_path: Path,
                                                                 models: Models) -> None:
    noise = Image.frombytes("RGB", (1400, 1400), os.urandom(1400 * 1400 * 3))
    noise.save(tmp_path / "big.png")  # noise does not compress: ~5.9 MB
    image(tmp_path / "small.jpg", fmt="JPEG")
    text = starter.text(tmp_path)
    assert "\n  prepare: {max_side: 2048" in text  # active, not commented out
    path = tmp_path / starter.NAME
    path.write_text(text)
    manifest = load(path, models)
    tasks = list(manifest.tasks())
    assert [t.id for t in tasks] == ["big.png", "small.jpg"]  # patterns merge, sorted
    assert tasks[0].prepare is not None and tasks[0].prepare.max_side == 2048
    assert check_all(manifest, models).tasks == 2
