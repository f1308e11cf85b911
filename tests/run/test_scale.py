"""A catalog of thousands through the real CLI (slow suite): everything lands once, and
a nightly re-run sends nothing. Speed and memory are measured by `make bench`, not here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Cli, tiny_image, write_manifest

TASKS = 3000


@pytest.mark.slow
def test_thousands_of_tasks_run_once_and_rerun_sends_nothing(tmp_path: Path, cli: Cli,
                                                              simulator) -> None:
    first = tiny_image(tmp_path / "skus/00000.png", (120, 60, 30), size=8)
    for i in range(1, TASKS):  # same bytes, other names: the simulator renders once
        os.link(first, tmp_path / f"skus/{i:05d}.png")
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
        limits: {rate: unlimited, concurrency: 32}
        tasks:
          - glob: "skus/*.png"
            prompt: Put the product on a pure white background
    """)
    sim = simulator()
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, timeout=600)
    assert (code, summary["succeeded"]) == (0, TASKS)
    assert sim.stats().requests == TASKS
    assert len(list(tmp_path.glob("skus/*.edited.png"))) == TASKS

    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, timeout=600)
    assert (code, summary["plan"], summary["sent"]) == (0, {"done": TASKS}, 0)
    assert sim.stats().requests == TASKS
