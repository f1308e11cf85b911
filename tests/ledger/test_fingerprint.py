"""Fingerprints and the content-hash cache, on real files and a real ledger."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.ledger.fingerprint import (
    MemoryHashCache,
    content_hash,
    fingerprint,
    idempotency_key,
)
from pipeline.ledger.store import Ledger
from pipeline.task import Location, Task


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "job.ledger.sqlite") as opened:
        yield opened


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_task(images: tuple[Path, ...], **changes: object) -> Task:
    task = Task(
        id="gift-basket",
        images=images,
        prompt="Put both items in a gift basket",
        where=Location(images[0].parent / "job.yaml", 4),
        root=images[0].parent,
        fields={"model": "gpt-image-1", "quality": "high", "size": "1024x1024"},
    )
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def test_content_hash_is_the_sha256_of_the_bytes(tmp_path: Path, ledger: Ledger) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB chunks and a tail
    path = write(tmp_path / "big.png", data)
    assert content_hash(path, ledger) == hashlib.sha256(data).hexdigest()


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, ledger: Ledger) -> None:
    original = b"original image bytes"
    path = write(tmp_path / "soap.png", original)
    first = content_hash(path, ledger)
    mtime_ns = path.stat().st_mtime_ns

    # Same size, other bytes, old mtime: only a hash that skips reading still says `first`.
    path.write_bytes(b"replaced image bytes")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert content_hash(path, ledger) == first

    os.utime(path, ns=(mtime_ns + 1_000_000_000, mtime_ns + 1_000_000_000))
    assert content_hash(path, ledger) == hashlib.sha256(b"replaced image bytes").hexdigest()


def test_the_hash_cache_outlives_the_process(tmp_path: Path) -> None:
    path = write(tmp_path / "soap.png", b"original image bytes")
    mtime_ns = path.stat().st_mtime_ns
    with Ledger.open(tmp_path / "job.ledger.sqlite") as first_run:
        first = content_hash(path, first_run)
    path.write_bytes(b"replaced image bytes")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    with Ledger.open(tmp_path / "job.ledger.sqlite") as second_run:
        assert content_hash(path, second_run) == first


def test_fingerprint_follows_what_is_asked(tmp_path: Path) -> None:
    kit = write(tmp_path / "kit.png", b"kit")
    soap = write(tmp_path / "soap.png", b"soap")
    task = make_task((kit, soap))
    cache = MemoryHashCache()
    base = fingerprint(task, cache)
    assert len(base) == 64
    assert fingerprint(task, cache) == base

    changed = [
        make_task((kit, soap), prompt="Put both items in a wooden crate"),
        make_task((kit, soap), fields={**task.fields, "quality": "low"}),
        make_task((kit, soap), fields={**task.fields, "background": "transparent"}),
        make_task((kit, soap), fields={**task.fields, "model": "gpt-image-1-mini"}),
        make_task((soap, kit)),  # the first image leads the edit: order matters
        make_task((kit, soap), mask=write(tmp_path / "mask.png", b"mask")),
        make_task((kit, soap), route="chat"),  # another route is another request
        make_task((kit, soap), route="gemini"),
    ]
    prints = [fingerprint(t, cache) for t in changed]
    assert base not in prints
    assert len(set(prints)) == len(prints)


def test_the_images_route_keeps_the_fingerprints_made_before_routes(tmp_path: Path) -> None:
    # Catalogs finished before routes existed went by images: they must not be paid again.
    kit = write(tmp_path / "kit.png", b"kit")
    cache = MemoryHashCache()
    task = make_task((kit,))
    assert task.route == "images"
    canonical = {"version": 1, "model": task.model, "prompt": task.prompt,
                 "fields": dict(task.fields), "images": [hashlib.sha256(b"kit").hexdigest()],
                 "mask": None}
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert fingerprint(task, cache) == hashlib.sha256(text.encode()).hexdigest()


def test_fingerprint_follows_the_bytes_of_the_inputs(tmp_path: Path) -> None:
    kit = write(tmp_path / "kit.png", b"kit")
    task = make_task((kit,))
    before = fingerprint(task, MemoryHashCache())
    kit.write_bytes(b"kit, retouched")
    assert fingerprint(task, MemoryHashCache()) != before


def test_fingerprint_ignores_where_files_live_and_where_outputs_go(tmp_path: Path) -> None:
    kit = write(tmp_path / "kit.png", b"kit")
    moved = write(tmp_path / "archive" / "2024" / "kit-copy.png", b"kit")
    task = make_task((kit,))
    cache = MemoryHashCache()
    assert fingerprint(task, cache) == fingerprint(make_task((moved,)), cache)
    elsewhere = make_task((kit,), output="out/{id}.{ext}", where=Location(tmp_path / "b.yaml"))
    assert fingerprint(task, cache) == fingerprint(elsewhere, cache)


def test_idempotency_key_is_stable_and_specific() -> None:
    key = idempotency_key("gift-basket", "f" * 64)
    assert key == idempotency_key("gift-basket", "f" * 64)
    assert key.startswith("imgedit-") and len(key) == len("imgedit-") + 32
    assert key != idempotency_key("gift-basket", "e" * 64)
    assert key != idempotency_key("gift-basket-2", "f" * 64)
    # The separator keeps ("ab", "c…") and ("a", "bc…") apart.
    assert idempotency_key("ab", "cd") != idempotency_key("a", "bcd")
