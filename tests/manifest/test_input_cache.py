"""What an input's full check found, kept in the ledger beside its hash: verdict, width and
height. A re-run reads no unchanged input (not even its header, for the cost estimate);
a changed one is read and checked again; a ledger from before the sizes were kept gains
them with one header read per file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from pipeline.config import models as models_module
from pipeline.config.models import FileFacts, Models
from pipeline.ledger.migrations import MIGRATIONS
from pipeline.ledger.store import Ledger
from pipeline.manifest.inputs import check_input
from pipeline.manifest.load import load
from pipeline.manifest.preflight import check_all
from tests.conftest import image, write_manifest


def same_size_junk(path: Path) -> None:
    """Other bytes, same size and mtime: only a file that is opened can tell."""
    before = path.stat()
    path.write_bytes(b"\0" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def dimensions(ledger_path: Path) -> list[tuple[str, int | None, int | None]]:
    with closing(sqlite3.connect(ledger_path)) as db:
        return db.execute("SELECT path, width, height FROM file_hashes ORDER BY path").fetchall()


def test_a_checked_input_is_not_opened_again_and_keeps_its_size(tmp_path: Path) -> None:
    photo = image(tmp_path / "photo.png", (40, 30))
    size = photo.stat().st_size
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        assert check_input(photo, ledger) == FileFacts(size, "png", (40, 30))
    assert dimensions(tmp_path / "l.sqlite") == [(str(photo), 40, 30)]
    same_size_junk(photo)
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.look_up([photo])  # as a pass over many files asks: a chunk at a time
        assert check_input(photo, ledger) == FileFacts(size, "png", (40, 30))
        assert check_input(photo, ledger) == FileFacts(size, "png", (40, 30))  # one query


def test_a_changed_input_is_read_and_checked_again(tmp_path: Path) -> None:
    photo = image(tmp_path / "photo.jpg", (40, 30), fmt="JPEG")
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.look_up([photo])
        assert isinstance(check_input(photo, ledger), FileFacts)
        # New size: read, hashed and decoded again; here it is cut short.
        photo.write_bytes(photo.read_bytes()[:-100])
        ledger.look_up([photo])
        assert "is damaged or cut short" in str(check_input(photo, ledger))
        # New mtime, same size: the new bytes are hashed and their sizes taken.
        image(photo, (30, 40), fmt="JPEG")
        data = photo.read_bytes()
        os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
        found = photo.stat()
        ledger.look_up([photo])
        assert check_input(photo, ledger) == FileFacts(len(data), "jpeg", (30, 40))
        assert ledger.file_hash(photo, found.st_size, found.st_mtime_ns) == (
            hashlib.sha256(data).hexdigest())


def test_an_older_ledger_gains_sizes_with_one_header_read(tmp_path: Path) -> None:
    """A ledger from before m006: verdicts without sizes. The next check reads each
    header once and keeps what it found; the one after opens nothing."""
    photo = image(tmp_path / "photo.png", (40, 30))
    found = photo.stat()
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for number, step in enumerate(MIGRATIONS[:5], start=1):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("INSERT INTO file_hashes (path, size, mtime_ns, sha256, format, verdict)"
                   " VALUES (?, ?, ?, ?, 'png', 'ok')",
                   (str(photo), found.st_size, found.st_mtime_ns, "ab" * 32))
    with Ledger.open(path) as ledger:
        assert check_input(photo, ledger) == FileFacts(found.st_size, "png", (40, 30))
    assert dimensions(path) == [(str(photo), 40, 30)]
    with closing(sqlite3.connect(path)) as db:  # the rest of the row as it was
        assert db.execute("SELECT sha256, verdict FROM file_hashes").fetchall() == [
            ("ab" * 32, "ok")]
    same_size_junk(photo)
    with Ledger.open(path) as ledger:
        assert check_input(photo, ledger) == FileFacts(found.st_size, "png", (40, 30))


def test_the_estimate_from_preflight_sizes_is_the_estimate_from_headers(
        tmp_path: Path, models: Models) -> None:
    """Input-image tokens counted from the sizes the check kept (first run and re-run)
    are the ones counted from each file's header, task by task."""
    for i, shape in enumerate([(24, 24), (2000, 1200), (300, 200), (1024, 1536)]):
        image(tmp_path / f"catalog/{i}.png", shape)
    manifest = write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: high, size: 1024x1024}
        tasks:
          - glob: "catalog/*.png"
            prompt: Put it on white
        """)
    job = load(manifest, models)
    each = [models.estimate(task) for task in job.tasks()]  # each header read
    assert len(set(each)) > 1  # the input images make a difference here
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        first = check_all(job, models, known=ledger).cost
    assert all(w and h for _, w, h in dimensions(tmp_path / "l.sqlite"))
    for photo in (tmp_path / "catalog").iterdir():
        same_size_junk(photo)  # a header read now would find no size at all...
    models_module._shape.cache_clear()  # ...once this process forgets the ones it read
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        again = check_all(job, models, known=ledger).cost
    assert first == again == sum(each)
