"""Fingerprints: what a task asks for, as one hash, so a finished task is never paid for twice.

Owns the fingerprint of a task (model, its configured route, prompt, request
fields, the content hashes of its inputs and mask, in order, and its `prepare:`
settings), the content hash of a file behind a (path, size, mtime) cache, and
the Idempotency-Key a task sends on every attempt.

It must never hash paths (moving an identical file is not a change) or the
output template (where a result goes is not what was asked), and never re-read
a file whose path, size and mtime the cache already knows.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

from pipeline.config.models import sniff_format
from pipeline.task import Task

# Bump when the canonical form below changes: every task then counts as changed once,
# instead of an old and a new form silently meaning the same thing.
FINGERPRINT_VERSION = 1
CHUNK = 1024 * 1024
# One encoder for every fingerprint (json.dumps with options builds a new one per call);
# the canonical dict below holds no cycle, so none is looked for.
_canonical_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                   default=str, check_circular=False).encode


class HashCache(Protocol):
    """(path, size, mtime_ns) → sha256 hex. The Ledger is one."""

    def file_hash(self, path: Path, size: int, mtime_ns: int) -> str | None: ...

    def checked_hash(self, path: Path) -> str | None: ...

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str,
                      format: str | None = None) -> None: ...


class MemoryHashCache:
    """A HashCache for one process, without a ledger (the fingerprint tests use it)."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, int, int], str] = {}

    def file_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        return self._hashes.get((str(path), size, mtime_ns))

    def checked_hash(self, path: Path) -> str | None:
        return None

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str,
                      format: str | None = None) -> None:
        self._hashes[(str(path), size, mtime_ns)] = sha256


def content_hash(path: Path, cache: HashCache) -> str:
    """sha256 hex of the file's bytes; from the cache, without opening it, when unchanged.

    Raises OSError when the file cannot be read (the manifest checks files first).
    """
    if (checked := cache.checked_hash(path)) is not None:
        return checked  # the check pass stat()ed it a moment ago and found it unchanged
    before = os.stat(path)
    cached = cache.file_hash(path, before.st_size, before.st_mtime_ns)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    head = b""
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            head = head or bytes(view[:16])
            digest.update(view[:read])
    sha256 = digest.hexdigest()
    after = os.stat(path)
    # A file written while we read it: the hash is of neither version, so it is not
    # cached and the next run reads the file again.
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
        cache.remember_hash(path, before.st_size, before.st_mtime_ns, sha256,
                            sniff_format(head))
    return sha256


def fingerprint(task: Task, hashes: HashCache) -> str:
    """sha256 hex over a canonical JSON of everything the gateway is asked to do."""
    canonical = {
        "version": FINGERPRINT_VERSION,
        "model": task.model,
        # Only a route other than images is written, so tasks fingerprinted before routes
        # existed (all on images) keep their fingerprint and are not paid for again.
        **({"route": task.route} if task.route != "images" else {}),
        "prompt": task.prompt,
        "fields": dict(task.fields),  # sort_keys below orders them
        "images": [content_hash(p, hashes) for p in task.images],  # order matters: image[0]
        "mask": content_hash(task.mask, hashes) if task.mask is not None else None,
    }
    if task.prepare is not None:  # only when set: every other task keeps its fingerprint
        canonical["prepare"] = task.prepare.key()
    return hashlib.sha256(_canonical_json(canonical).encode()).hexdigest()


def idempotency_key(task_id: str, fingerprint: str) -> str:
    """The same key on every attempt, in every run, of one task asking one thing."""
    digest = hashlib.sha256(f"{task_id}\0{fingerprint}".encode()).hexdigest()
    return f"imgedit-{digest[:32]}"
