"""Outputs land whole or not at all, next to the inputs, with a sidecar."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.ledger import durable
from pipeline.ledger.durable import write_atomic
from pipeline.ledger.sidecar import read_sidecar, write_sidecar
from pipeline.run.writer import result_of, write_result
from pipeline.task import Location, Task


def png(color: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def make_task(tmp_path: Path, **kw: object) -> Task:
    src = tmp_path / "shirt.jpg"
    src.write_bytes(b"not used")
    base: dict[str, object] = dict(
        id="shirt", images=(src,), prompt="navy", where=Location(tmp_path / "m.yaml", 3),
        root=tmp_path, fields={"model": "gpt-image-1"},
        placeholders={"dir": str(tmp_path), "stem": "shirt"})
    base.update(kw)
    return Task(**base)  # type: ignore[arg-type]


def write_outputs(task: Task, images: list[bytes], formats: list[str]) -> list[Path]:
    """The images' paths, as the writer put them (the sidecar comes last)."""
    written = write_result(result_of(task, "fp", images, formats, {"task_id": task.id}))
    assert Path(written[-1][0]).suffix == ".json"
    return [Path(path) for path, *_ in written[:-1]]


def test_outputs_land_next_to_input_with_real_extension(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    paths = write_outputs(task, [png((1, 2, 3))], ["png"])
    assert paths == [tmp_path / "shirt.edited.png"]
    assert Image.open(paths[0]).getpixel((0, 0)) == (1, 2, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".imgedit-")]


def test_several_outputs_get_an_index(tmp_path: Path) -> None:
    task = make_task(tmp_path, fields={"model": "gpt-image-1", "n": 2})
    paths = write_outputs(task, [png((1, 1, 1)), png((2, 2, 2))], ["png", "png"])
    assert [p.name for p in paths] == ["shirt.edited-0.png", "shirt.edited-1.png"]


def test_relative_template_resolves_against_manifest_folder(tmp_path: Path) -> None:
    task = make_task(tmp_path, output="out/{id}-{index}.{ext}")
    assert write_outputs(task, [png((0, 0, 0))], ["webp"]) == [tmp_path / "out/shirt-0.webp"]


def test_never_overwrites_an_input(tmp_path: Path) -> None:
    task = make_task(tmp_path, output="{dir}/{stem}.jpg")
    with pytest.raises(ValueError, match="overwrite an input"):
        write_outputs(task, [png((0, 0, 0))], ["jpg"])
    assert (tmp_path / "shirt.jpg").read_bytes() == b"not used"


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    write_atomic(target, png((9, 9, 9)))
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert Image.open(target).getpixel((0, 0)) == (9, 9, 9)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_a_write_that_stops_writing_is_an_error_not_a_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write returning 0 (never for a file; a full disk raises ENOSPC) ends in EIO, with
    the old file kept and no temp file left, instead of looping for ever."""
    target = tmp_path / "a.png"
    write_atomic(target, png((9, 9, 9)))
    real_write, calls = os.write, []

    def stuck(fd: int, data: bytes) -> int:
        if fd <= 2:  # pytest's own output
            return real_write(fd, data)
        calls.append(len(data))
        return 10 if len(calls) == 1 else 0  # a short write, then nothing

    monkeypatch.setattr(os, "write", stuck)
    with pytest.raises(OSError) as raised:
        write_atomic(target, png((1, 1, 1)))
    monkeypatch.undo()
    assert raised.value.errno == errno.EIO and "a.png" in str(raised.value)
    assert len(calls) == 2 and calls[1] == calls[0] - 10  # the rest, after the short write
    assert Image.open(target).getpixel((0, 0)) == (9, 9, 9)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_a_write_makes_its_folder_and_gives_the_file_an_ordinary_mode(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "a.png"
    write_atomic(target, png((1, 2, 3)))
    assert Image.open(target).getpixel((0, 0)) == (1, 2, 3)
    assert stat.S_IMODE(target.stat().st_mode) == durable.FILE_MODE  # not mkstemp's 0600
    assert os.listdir(target.parent) == ["a.png"]


def test_a_temp_name_already_taken_is_left_alone(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A dead run with our pid left its temp file at the name our counter comes to next.
    monkeypatch.setattr(durable, "_COUNTER", itertools.count(7))
    stale = tmp_path / f"{durable.TEMP_PREFIX}{os.getpid()}-{durable._TOKEN}7.part"
    stale.write_bytes(b"half an image")
    write_atomic(tmp_path / "a.png", png((4, 5, 6)))
    assert Image.open(tmp_path / "a.png").getpixel((0, 0)) == (4, 5, 6)
    assert stale.read_bytes() == b"half an image"
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale.name, "a.png"]


def test_sidecar_round_trip(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    path = write_sidecar(task, "png", {"task_id": "shirt", "fingerprint": "abc"})
    assert path == tmp_path / "shirt.edited.json"
    assert json.loads(path.read_text())["fingerprint"] == "abc"
    assert read_sidecar(task) == {"task_id": "shirt", "fingerprint": "abc", "manifest": "m.yaml"}


def test_sidecar_found_when_the_format_names_a_folder(tmp_path: Path) -> None:
    task = make_task(tmp_path, output="{dir}/{ext}/{stem}.{ext}")
    path = write_sidecar(task, "webp", {"task_id": "shirt"})
    assert path == tmp_path / "webp/shirt.json"
    assert read_sidecar(task) == {"task_id": "shirt", "manifest": "m.yaml"}


WRITER_LOOP = """
import io, sys
from pathlib import Path
from PIL import Image
from pipeline.ledger.durable import write_atomic
target = Path(sys.argv[1])
blobs = []
for i in range(4):
    buf = io.BytesIO()
    Image.effect_noise((400 + i * 50, 400), 60).save(buf, "PNG")
    blobs.append(buf.getvalue())
print("ready", flush=True)
i = 0
while True:
    write_atomic(target, blobs[i % 4]); i += 1
"""


def test_kill_9_during_writes_never_leaves_a_partial_image(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    for delay in (0.05, 0.13, 0.21):
        proc = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(target)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)  # let it get somewhere mid-write; the kill time is the variable
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with Image.open(target) as image:
            image.load()  # a truncated file raises here
