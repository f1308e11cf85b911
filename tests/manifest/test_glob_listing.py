"""The glob's shortcuts on a re-run, against what a file tree can hold: a folder named
like a photo, links, a FIFO, our outputs and sidecars beside the photos. The listing's
own type answers for plain files; everything else is looked at as before. And the
collision check's shortcut (no look-up of an output path no input ends like)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from pipeline.config.models import Models
from pipeline.errors import ManifestError
from pipeline.manifest.globsource import matches, matches_any
from pipeline.manifest.load import load
from pipeline.manifest.preflight import check_all
from tests.conftest import image


def names(root: Path, found: list[Path]) -> list[str]:
    return [os.path.relpath(p, root) for p in found]


def test_a_folder_named_like_a_photo_is_walked_not_taken(tmp_path: Path) -> None:
    image(tmp_path / "cat" / "odd.jpg" / "inner.jpg", fmt="JPEG")
    image(tmp_path / "cat" / "a.jpg", fmt="JPEG")
    assert names(tmp_path, list(matches(tmp_path, "cat/**/*.jpg"))) == [
        "cat/a.jpg", "cat/odd.jpg/inner.jpg"]
    assert names(tmp_path, list(matches(tmp_path, "cat/*.jpg"))) == ["cat/a.jpg"]


def test_links_fifos_and_our_files_beside_the_photos(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    image(tmp_path / "real" / "r.jpg", fmt="JPEG")
    image(cat / "a.jpg", fmt="JPEG")
    image(cat / "a.edited.png")  # an earlier result and its sidecar: not *.jpg
    (cat / "a.edited.json").write_text("{}")
    (cat / "link.jpg").symlink_to(tmp_path / "real" / "r.jpg")  # a link to a photo: taken
    (cat / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # broken: taken, the check says
    (cat / "sub").symlink_to(tmp_path / "real", target_is_directory=True)  # `**` never follows
    os.mkfifo(cat / "pipe.jpg")  # taken: the input check refuses it without opening it
    found = names(tmp_path, list(matches_any(tmp_path, ["cat/**/*.jpg"], [])))
    assert found == ["cat/a.jpg", "cat/gone.jpg", "cat/link.jpg", "cat/pipe.jpg"]
    # Without `**`, a link to a folder is a folder a pattern may go through.
    assert names(tmp_path, list(matches(tmp_path, "cat/sub/*.jpg"))) == ["cat/sub/r.jpg"]


def test_a_bracket_in_the_last_segment_never_spans_a_folder(tmp_path: Path) -> None:
    # `[!x]` is one character of one name, as in a shell: never the `/` of `a/b`.
    image(tmp_path / "a" / "b", fmt="JPEG")
    image(tmp_path / "ayb", fmt="JPEG")
    assert names(tmp_path, list(matches(tmp_path, "**/a[!x]b"))) == ["ayb"]


def test_two_patterns_still_give_each_file_once(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        image(tmp_path / name, fmt="JPEG")
    assert names(tmp_path, list(matches_any(tmp_path, ["*.jpg", "a.*"], []))) == [
        "a.jpg", "b.jpg"]


def write(folder: Path, text: str) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_outputs_over_inputs_are_found_whatever_the_inputs_end_in(tmp_path: Path,
                                                                   models: Models) -> None:
    """An output is looked up among the inputs only when some input ends like it: the
    JPEGs here never meet the PNG outputs, yet a literal `.jpg` output, and an output with
    no extension over an input with none, are still caught."""
    image(tmp_path / "a.jpg", fmt="JPEG")
    image(tmp_path / "raw" / "b")  # a PNG without an extension
    image(tmp_path / "c.png")
    path = write(tmp_path, """
        version: 1
        defaults: {prompt: p}
        tasks:
          - images: a.jpg
          - images: raw/b
          - images: c.png
            output: a.jpg
          - images: c.png
            id: again
            output: raw/b
        """)
    with pytest.raises(ManifestError) as caught:
        check_all(load(path, models), models)
    found = [str(p) for p in caught.value.problems]
    assert any(f"{tmp_path}/a.jpg would overwrite an input of task 'a.jpg'" in p
               for p in found), found
    assert any(f"{tmp_path}/raw/b would overwrite an input of task 'raw/b'" in p
               for p in found), found
    assert not any("a.edited" in p or "b.edited" in p for p in found), found
