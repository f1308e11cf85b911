"""Read the ledger for people and scripts: `imgedit status` and `imgedit export`.

Read-only: it never takes the run lock and never changes a row, so it can
run beside a live run (WAL lets readers in while the run writes).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from pipeline.errors import InputError
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.reviews import Review, Reviews
from pipeline.ledger.store import Ledger, TaskRecord
from pipeline.task import State

EXPORT_COLUMNS = ("id", "state", "terminal", "fingerprint", "model", "prompt", "attempts",
                  "cost", "reason", "error_type", "error_code", "request_id", "outputs",
                  "first_input", "updated_at", "review", "review_note")


def _open(manifest: Path, ledger: Path | None) -> Ledger:
    path = ledger or ledger_mod.default_path(manifest.resolve())
    if not path.exists():
        raise InputError(f"no ledger at {path}: `imgedit run {manifest}` creates it")
    return Ledger.open(path)


def status(manifest: Path, ledger: Path | None = None) -> dict[str, Any]:
    with _open(manifest, ledger) as book:
        failures = [
            {"id": r.id, "state": r.state.value, "terminal": r.terminal, "reason": r.reason,
             "attempts": r.attempts, "error": r.error_code or r.error_type}
            for r in book.records() if r.state in (State.FAILED, State.UNKNOWN)
        ]
        counts, reviews = book.counts(), Reviews(book).counts()
        # results nobody has approved or rejected yet (a redone one among them)
        reviews["unreviewed"] = counts[State.SUCCEEDED.value] - sum(reviews.values())
        return {"manifest": str(manifest), "counts": counts,
                "spent": round(book.spent(), 4), "reviews": reviews, "failures": failures}


def status_text(report: dict[str, Any]) -> str:
    counts = report["counts"]
    order = [s.value for s in State]
    line = ", ".join(f"{s} {counts[s]}" for s in order if counts.get(s))
    lines = [f"{report['manifest']}: {line or 'no tasks recorded'}; spent ${report['spent']:.2f}"]
    for f in report["failures"]:
        kind = "unknown" if f["state"] == "unknown" else (
            "failed (terminal)" if f["terminal"] else "failed (will retry)")
        lines.append(f"  {f['id']}: {kind} after {f['attempts']} attempt(s): {f['reason']}")
    if report["failures"]:
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


def export(manifest: Path, fmt: str, out: TextIO = sys.stdout, ledger: Path | None = None) -> int:
    """Stream the task table as CSV or JSON lines; returns the number of rows."""
    count = 0
    with _open(manifest, ledger) as book:
        decisions = Reviews(book).current()  # the reviewed few, not a row per task
        writer = csv.DictWriter(out, EXPORT_COLUMNS) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        for record in book.records():
            row = _row(record, decisions.get(record.id))
            if writer:
                writer.writerow({**row, "outputs": ";".join(row["outputs"])})
            else:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
