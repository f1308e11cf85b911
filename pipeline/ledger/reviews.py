"""Review decisions: a person approved or rejected a task's result, with a note.

Owns the `reviews` table (migration m003): one row per decision, committed at
once. What counts for a task is its latest decision about its current result —
the same fingerprint, and the `updated_at` its row had when it was reviewed — so
a redo or a changed prompt starts unreviewed, and `undo` removes the latest
decision (the one before it, if any, counts again).

It never changes a task's state and never touches a file: `run --redo-rejected`
reads `rejected()` and does the rest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import InputError
from pipeline.ledger.store import Ledger
from pipeline.task import State

NOTE_CHARS = 2000  # a note is a sentence or two; a pasted essay is cut, never refused


class Decision(enum.StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Review:
    task_id: str
    decision: Decision
    note: str | None
    decided_at: str

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.value, "note": self.note, "decided_at": self.decided_at}


# The decisions about each task's current result, the latest first (highest id). CROSS
# JOIN keeps the reviews as the outer loop: people review a few results, and SQLite would
# otherwise scan every task of a 100k ledger to find none (60 ms on each run's plan).
_CURRENT = (
    "SELECT r.id, r.task_id, r.decision, r.note, r.decided_at FROM reviews r"
    " CROSS JOIN tasks t ON t.id = r.task_id AND t.fingerprint = r.fingerprint"
    " AND t.updated_at = r.result_at AND t.state = 'succeeded'"
)
_LATEST = (
    f"SELECT task_id, decision, note, decided_at FROM ({_CURRENT}) c"
    " WHERE c.id = (SELECT MAX(r2.id) FROM reviews r2 WHERE r2.task_id = c.task_id)"
)


class Reviews:
    """The decisions recorded in one ledger."""

    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._db = ledger.connection()

    def decide(self, task_id: str, decision: Decision | str, note: str | None = None) -> Review:
        """Record a decision about `task_id`'s current result; committed before it returns.
        Only a succeeded task has a result to judge: anything else is an InputError."""
        decision = Decision(decision)
        row = self._db.execute(
            "SELECT fingerprint, updated_at, state FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None or row[2] != State.SUCCEEDED:
            raise InputError(f"task {task_id!r} has no result to review")
        note = (note or "").strip()[:NOTE_CHARS] or None
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        self._ledger.flush()  # the ledger's pending batch (successes join it) goes first
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO reviews (task_id, fingerprint, result_at, decision, note, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (task_id, row[0], row[1], decision.value, note, now))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return Review(task_id, decision, note, now)

    def undo(self, task_id: str) -> Review | None:
        """Remove the latest decision about `task_id`'s current result; returns what counts now."""
        self._ledger.flush()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                f"DELETE FROM reviews WHERE id = (SELECT MAX(id) FROM ({_CURRENT}) c"
                " WHERE c.task_id = ?)", (task_id,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self.current([task_id]).get(task_id)

    def current(self, ids: list[str] | None = None) -> dict[str, Review]:
        """task id → the decision that counts, for `ids` (every reviewed task when None)."""
        sql, params = _LATEST, tuple(ids or ())
        if ids is not None:
            sql += f" AND c.task_id IN ({','.join('?' * len(ids))})"
        return {
            task_id: Review(task_id, Decision(decision), note, decided_at)
            for task_id, decision, note, decided_at in self._db.execute(sql, params)
        }

    def rejected(self) -> set[str]:
        """Ids of the tasks whose current result was rejected: what --redo-rejected sends."""
        return {r.task_id for r in self.current().values() if r.decision is Decision.REJECTED}

    def counts(self) -> dict[str, int]:
        """Decisions that count, by kind; both kinds present, 0 when none."""
        found = {d: 0 for d in Decision}
        for review in self.current().values():
            found[review.decision] += 1
        return {d.value: n for d, n in found.items()}
