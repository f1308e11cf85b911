"""The spool: a paid answer that could not be written waits beside the ledger.

When an output folder turns read-only, fills up or refuses us after the
gateway answered (EROFS, ENOSPC, EDQUOT, EACCES), the answer's files go to
`<ledger>.spool/<task>/` instead, with what the ledger needs to record the
success; the task is recorded as paid but not written. The next run writes
them where they belong before it plans anything, so nothing is paid twice.

It never sends a request, and never deletes an entry before its files are in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.ledger.durable import write_atomic
from pipeline.ledger.store import Ledger
from pipeline.run.writer import Result, write_result

ENTRY = "entry.json"


def folder(ledger_path: Path) -> Path:
    return ledger_path.with_name(f"{ledger_path.name}.spool")


def keep(spool: Path, result: Result, meta: Mapping[str, Any]) -> Path:
    """Store `result`'s files and `meta` (usage, cost, request_id, endpoint) durably;
    entry.json goes last, so an entry without it is a keep cut short. Raises OSError."""
    entry = spool / hashlib.sha256(result.task_id.encode()).hexdigest()[:24]
    files = []
    for number, (target, data) in enumerate(result.files):
        stored = entry / f"{number}{target.suffix}"
        write_atomic(stored, data)
        files.append([stored.name, str(target)])
    record = {**meta, "task_id": result.task_id, "fingerprint": result.fingerprint,
              "files": files}
    write_atomic(entry / ENTRY, json.dumps(record, ensure_ascii=False).encode())
    return entry


def kept_or_lost(spool: Path, result: Result, exc: OSError, record: Mapping[str, Any]) -> str:
    """Keep a result its folder refused; the reason to record for its task."""
    meta = {k: record.get(k) for k in ("usage", "cost", "request_id", "endpoint")}
    try:
        entry = keep(spool, result, meta)
    except OSError as lost:
        return (f"paid, but neither written ({exc.strerror or exc}) nor kept in {spool}"
                f" ({lost.strerror or lost}): this answer is lost")
    return (f"paid, but not written ({exc.strerror or exc}); kept in {entry}: the next run"
            " writes it without a new request")


def _entries(spool: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    try:
        names = sorted(os.listdir(spool))
    except OSError:
        return
    for name in names:
        try:
            yield spool / name, json.loads((spool / name / ENTRY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            yield spool / name, None


def deliver(spool: Path, ledger: Ledger) -> int:
    """Write every kept result where it belongs and record its success; returns how many.

    Raises InputError (exit 2, nothing sent) naming the folder when one still cannot be
    written: the run must not pay for more while earlier answers wait."""
    delivered = 0
    for entry, record in _entries(spool):
        if record is None:
            shutil.rmtree(entry, ignore_errors=True)  # a keep cut short: its task was not
            continue  # recorded as kept, so the plan sends it again
        stored = [(Path(target), (entry / name).read_bytes()) for name, target in record["files"]]
        result = Result(record["task_id"], record["fingerprint"], tuple(stored))
        try:
            files = write_result(result)
        except OSError as exc:
            raise InputError(
                f"{result.outputs[0].parent}: cannot write the paid result of task "
                f"{result.task_id!r} kept in {entry} ({exc.strerror or exc}): make room or "
                "make the folder writable, then run again (it will be written, not re-sent)"
            ) from exc
        ledger.mark_succeeded(result.task_id, result.fingerprint, result.outputs,
                              result.sidecar, usage=record.get("usage"),
                              cost=record.get("cost"), request_id=record.get("request_id"),
                              written=files, endpoint=record.get("endpoint"))
        shutil.rmtree(entry, ignore_errors=True)
        delivered += 1
    with contextlib.suppress(OSError):
        spool.rmdir()  # only when empty: every kept result is in place
    return delivered
