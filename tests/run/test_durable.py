"""Tests that fail when the writer is wrong (issue 11, "tests that fail when the code is
wrong"): every image is fsynced before it is renamed into place, and a task's sidecar
(which says "done") is renamed into place only after all of its images. (The sidecar
itself is not fsynced, by design: see write_sidecar.)

A real run, in this process, against the simulator on loopback; the only thing wrapped
is the OS (os.fsync, os.replace), to watch the calls as they really happen.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pipeline.run.runner import RunOptions, run
from pipeline.simulator.app import SimulatorThread
from tests.conftest import TEST_KEY, tiny_image, write_manifest


@pytest.fixture
def calls(tmp_path: Path, sim: SimulatorThread,
          monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Run a 6-task manifest (two images each) and return every fsync and replace seen."""
    for i in range(6):
        tiny_image(tmp_path / "in" / f"t{i}.png", (30 * i, 60, 90))
    manifest = write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024, n: 2}
        limits: {rate: unlimited, concurrency: 3}
        tasks:
          - glob: "in/*.png"
            prompt: Put it on white
        """)
    seen: list[tuple[str, str, str]] = []
    lock = threading.Lock()  # the writer runs in worker threads
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        with lock:
            seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        real_fsync(fd)

    def replace(src: str, dst: str, **kwargs: object) -> None:
        with lock:
            seen.append(("replace", str(src), str(dst)))
        real_replace(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setenv("IMGEDIT_API_KEY", TEST_KEY)
    monkeypatch.setenv("IMGEDIT_RETRY_WAIT_SCALE", "0")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    code = run(RunOptions(manifest=manifest, base_url=sim.base_url, quiet=True),
               out=lambda text: None)
    assert code == 0
    return [c for c in seen if c[0] == "fsync" or c[2].startswith(str(tmp_path / "in"))]


def test_every_image_is_fsynced_before_its_rename(calls: list[tuple[str, str, str]]) -> None:
    renames = [(i, src, dst) for i, (kind, src, dst) in enumerate(calls) if kind == "replace"]
    assert len(renames) == 6 * 3  # two images and a sidecar per task
    images = [(i, src, dst) for i, src, dst in renames if not dst.endswith(".json")]
    assert len(images) == 6 * 2
    for index, src, dst in images:
        synced = [i for i, (kind, path, _) in enumerate(calls[:index])
                  if kind == "fsync" and path == src]
        assert synced, f"{dst} was renamed into place without an fsync of {src}"


def test_a_sidecar_is_renamed_into_place_after_all_its_images(
        calls: list[tuple[str, str, str]]) -> None:
    order = [Path(dst) for kind, _, dst in calls if kind == "replace"]
    for sidecar in (p for p in order if p.suffix == ".json"):
        # t3.edited-0.json, named after the first image: t3.edited-0.png, t3.edited-1.png
        base = sidecar.stem.rsplit("-", 1)[0]
        images = [i for i, p in enumerate(order) if p.suffix != ".json"
                  and p.stem.rsplit("-", 1)[0] == base]
        assert len(images) == 2
        assert max(images) < order.index(sidecar), f"{sidecar} came before its images"
