"""Read the ledger for people and scripts: `imgedit status` and `imgedit export`.

Tasks of the manifest the ledger has never seen count (and export) as
`pending`: never sent. Money recorded by runs against a simulator is said to
be simulated. Read-only: it never takes the run lock and never changes a row,
so it can run beside a live run (WAL lets readers in while the run writes).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from pipeline.config.settings import config_dir, config_file, read_yaml
from pipeline.errors import ImgeditError, InputError
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.batches import Batches
from pipeline.ledger.reviews import Decision, Review, Reviews
from pipeline.ledger.store import Ledger, TaskRecord
from pipeline.manifest.load import load
from pipeline.task import State

EXPORT_COLUMNS = ("id", "state", "terminal", "fingerprint", "model", "prompt", "attempts",
                  "cost", "reason", "error_type", "error_code", "request_id", "outputs",
                  "first_input", "updated_at", "review", "review_note")


FAILURES_SHOWN = 20


@contextlib.contextmanager
def _open(manifest: Path, ledger: Path | None) -> Iterator[Ledger | None]:
    """The ledger, or None when no run has made one yet."""
    path = ledger or ledger_mod.default_path(manifest.resolve())
    if not path.exists():
        if not manifest.exists():
            raise InputError(f"no ledger at {path}, and no manifest at {manifest}")
        yield None
        return
    with Ledger.open(path) as book:
        yield book


def status(manifest: Path, ledger: Path | None = None,
           config: str | None = None) -> dict[str, Any]:
    """Counts by state (never-run tasks as pending), money, and every failure."""
    with _open(manifest, ledger) as book:
        counts = book.counts() if book else {}
        never = sum(1 for _ in never_run(manifest, config, book))
        if never:
            counts[State.PENDING.value] = counts.get(State.PENDING.value, 0) + never
        failures = [
            {"id": r.id, "state": r.state.value, "terminal": r.terminal, "reason": r.reason,
             "attempts": r.attempts, "error": r.error_code or r.error_type}
            for r in (book.records() if book else ()) if r.state in (State.FAILED, State.UNKNOWN)
        ]
        reviews = Reviews(book).counts() if book else {d.value: 0 for d in Decision}
        # results nobody has approved or rejected yet (a redone one among them)
        reviews["unreviewed"] = counts.get(State.SUCCEEDED.value, 0) - sum(reviews.values())
        return {"manifest": str(manifest), "counts": counts, "never_run": never,
                "spent": round(book.spent(), 4) if book else 0.0,
                "simulated": book is not None and simulated_spend(book, config),
                "reviews": reviews, "failures": failures,
                "batches": [{"id": b.id, "status": b.status, "total": b.total,
                             "completed": b.completed, "failed": b.failed,
                             "input_file_id": b.input_file_id, "created_at": b.created_at,
                             "ended_at": b.ended_at, "collected": b.collected_at is not None,
                             "provider": b.provider}
                            for b in (Batches(book).all() if book else [])]}


def never_run(manifest: Path, config: str | None, book: Ledger | None) -> Iterator[str]:
    """Ids of the manifest's tasks the ledger has no row for (nothing if it will not load)."""
    try:
        folder = config_dir(config)
        default_model = read_yaml(config_file(folder, "defaults.yaml")).get("model")
        loaded = load(manifest, default_model=str(default_model or "gpt-image-1"), defer=True)
    except ImgeditError:
        return  # status still shows the ledger; validate says what is wrong
    ids = (made.task.id for made in loaded.expand() if made.task is not None)
    for chunk in _chunks(ids, 500):
        known = book.states(chunk) if book else {}
        yield from (i for i in chunk if i not in known)


def _chunks(ids: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in ids:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def simulated_spend(book: Ledger, config: str | None) -> bool:
    """Every paid run went to a simulator: its money is a rehearsal's."""
    try:
        providers = read_yaml(config_file(config_dir(config), "providers.yaml"))
    except ImgeditError:
        providers = {}
    rehearsals = {"simulator"} | {name for name, entry in providers.items()
                                  if isinstance(entry, dict) and "simulator" in entry}
    used = book.paid_providers()
    return bool(used) and used <= rehearsals


def status_text(report: dict[str, Any]) -> str:
    counts = report["counts"]
    order = [s.value for s in State]
    line = ", ".join(f"{s} {counts[s]}" for s in order if counts.get(s))
    if report.get("never_run"):
        line += f" (never run {report['never_run']})"
    money = (f"simulated ${report['spent']:.2f} (nothing billed)" if report.get("simulated")
             else f"spent ${report['spent']:.2f}")
    lines = [f"{report['manifest']}: {line or 'no tasks recorded'}; {money}"]
    for b in report.get("batches", []):
        if b["status"] == "abandoned":
            continue  # never created, or gone: its tasks went back to send
        state = "collected" if b["collected"] else "waiting"
        lines.append(f"  batch {b['id'] or '(being created)'}: {b['status']}, "
                     f"{b['completed']} completed + {b['failed']} failed of {b['total']}; "
                     f"{state}")
    failures = report["failures"]
    for f in failures[:FAILURES_SHOWN]:
        kind = "unknown" if f["state"] == "unknown" else (
            "failed (terminal)" if f["terminal"] else "failed (will retry)")
        lines.append(f"  {f['id']}: {kind} after {f['attempts']} attempt(s): {f['reason']}")
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"  ... and {len(failures) - FAILURES_SHOWN} more (`--json` lists every one)")
    if failures:
        lines.append(f"reprocess with: imgedit run {report['manifest']} --only-failed")
    reviews = report["reviews"]
    if reviews["approved"] or reviews["rejected"]:
        lines.append(f"reviewed: {reviews['approved']} approved, {reviews['rejected']} rejected,"
                     f" {reviews['unreviewed']} to review")
    if reviews["rejected"]:
        lines.append(f"send the rejected again with: imgedit run {report['manifest']}"
                     " --redo-rejected")
    return "\n".join(lines)


def _row(record: TaskRecord, review: Review | None) -> dict[str, Any]:
    return {
        "id": record.id, "state": record.state.value, "terminal": record.terminal,
        "fingerprint": record.fingerprint, "model": record.model, "prompt": record.prompt,
        "attempts": record.attempts, "cost": record.cost, "reason": record.reason,
        "error_type": record.error_type, "error_code": record.error_code,
        "request_id": record.request_id, "outputs": [str(p) for p in record.outputs],
        "first_input": str(record.first_input) if record.first_input else None,
        "updated_at": record.updated_at.isoformat() if record.updated_at else None,
        "review": review.decision.value if review else None,
        "review_note": review.note if review else None,
    }


def export(manifest: Path, fmt: str, out: TextIO = sys.stdout, ledger: Path | None = None,
           config: str | None = None) -> int:
    """Stream the task table as CSV or JSON lines, never-run tasks as `pending` after the
    ledger's rows; returns the number of rows."""
    count = 0
    with _open(manifest, ledger) as book:
        decisions = Reviews(book).current() if book else {}  # the reviewed few
        writer = csv.DictWriter(out, EXPORT_COLUMNS) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        blank: dict[str, Any] = dict.fromkeys(EXPORT_COLUMNS)
        pending = ({**blank, "id": i, "state": State.PENDING.value, "outputs": []}
                   for i in never_run(manifest, config, book))
        recorded = (_row(r, decisions.get(r.id)) for r in (book.records() if book else ()))
        for row in itertools.chain(recorded, pending):
            if writer:
                writer.writerow({**row, "outputs": ";".join(row["outputs"])})
            else:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
