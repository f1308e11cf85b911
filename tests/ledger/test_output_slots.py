"""The output slots a task may write (claimed before its request, looked at for clashes):
rendered once per output with a stand-in for {ext}, they are the slots that rendering the
template for each format gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.ledger.ours import output_slots
from pipeline.task import IMAGE_FORMATS, Location, Task


def slots_one_by_one(task: Task) -> dict[str, set[str]]:
    slots: dict[str, set[str]] = {}
    for index in range(task.n):
        for ext in IMAGE_FORMATS:
            stem, suffix = os.path.splitext(os.path.normpath(task.output_path(index, ext)))
            slots.setdefault(stem, set()).add(suffix.lower())
    return slots


@pytest.mark.parametrize("output, n", [
    ("{dir}/{stem}.edited.{ext}", 1),
    ("{dir}/{stem}.edited.{ext}", 3),
    ("out/{id}-{index}.{ext}", 2),
    ("out/{ext}/{stem}.{ext}", 1),  # {ext} twice
    ("out/{stem}.{ext:>5}", 1),  # a format spec: rendered per format
    ("out/{stem}.png", 2),  # no {ext}
    ("out/../{dir}/./{stem}.{ext}", 1),
])
def test_slots_match_rendering_each_format(tmp_path: Path, output: str, n: int) -> None:
    task = Task(id="shirt", images=(tmp_path / "in" / "shirt.jpg",), prompt="p",
                where=Location(tmp_path / "job.yaml"), root=tmp_path,
                fields={"model": "gpt-image-1", "n": n}, output=output,
                placeholders={"dir": "in", "stem": "shirt"})
    assert output_slots(task) == slots_one_by_one(task)
    assert output_slots(task)


def test_a_template_that_cannot_be_filled_has_no_slots(tmp_path: Path) -> None:
    task = Task(id="shirt", images=(tmp_path / "shirt.jpg",), prompt="p",
                where=Location(tmp_path / "job.yaml"), root=tmp_path,
                fields={"model": "gpt-image-1"}, output="{nope}/{stem}.{ext}",
                placeholders={"dir": ".", "stem": "shirt"})
    assert output_slots(task) == {}
