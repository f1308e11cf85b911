"""The ledger's record of provider batches, and of the tasks waiting in them.

A batch's row is written before the batch exists (its `token`, also sent in the
batch's metadata, is the row's key), then given the provider's id, then
updated as the batch moves, and finally marked collected once every line of
its output and error files is in the ledger. A task in a batch is `batched`,
with the token in `tasks.batch`.

It never talks to the provider and never writes an image: it only remembers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.ledger.store import Ledger, _now
from pipeline.task import State, Task

ENDED = ("completed", "failed", "expired", "cancelled")
# Our own statuses before the provider knows the batch, and after we gave it up.
SUBMITTING, ABANDONED = "submitting", "abandoned"

_COLUMNS = ("token, id, provider, endpoint, input_file_id, status, total, completed, failed,"
            " output_file_id, error_file_id, intended_at, created_at, ended_at, collected_at,"
            " run_id")


@dataclass(frozen=True)
class BatchRow:
    token: str
    id: str | None
    provider: str
    endpoint: str | None
    input_file_id: str | None
    status: str
    total: int
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    intended_at: str
    created_at: str | None
    ended_at: str | None
    collected_at: str | None
    run_id: int | None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def _stamp(unix: int | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC).isoformat()


class Batches:
    """The batches of one ledger. Every write here is committed at once: a batch is money
    in flight, and its row must survive a kill -9 of the very next line."""

    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._db = ledger.connection()

    def intend(self, token: str, provider: str, endpoint: str, run_id: int,
               tasks: Iterable[tuple[Task, str]]) -> int:
        """Record a batch about to be created and mark its tasks `batched`; returns their
        number. Written and committed before the provider hears of it."""
        ledger, count = self._ledger, 0
        ledger._write(
            "INSERT INTO batches (token, provider, endpoint, status, run_id, intended_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (token, provider, endpoint, SUBMITTING, run_id, _now()))
        for task, fingerprint in tasks:
            ledger._set_task(
                task.id, fingerprint, State.BATCHED, terminal=0, reason=None, error_type=None,
                error_code=None, model=task.model, prompt=task.prompt, run_id=run_id,
                first_input=str(task.images[0]) if task.images else None, batch=token)
            count += 1
        ledger._write("UPDATE batches SET total = ? WHERE token = ?", (count, token))
        ledger.flush()
        return count

    def uploaded(self, token: str, file_id: str) -> None:
        self._commit("UPDATE batches SET input_file_id = ? WHERE token = ?", (file_id, token))

    def update(self, token: str, info: dict[str, object]) -> None:
        """The provider's view of the batch: id, status, counts, files, times."""
        counts = info.get("request_counts") or {}
        assert isinstance(counts, dict)
        ended = next((info.get(f"{s}_at") for s in ENDED if info.get(f"{s}_at")), None)
        self._commit(
            "UPDATE batches SET id = ?, status = ?, total = MAX(total, ?), completed = ?,"
            " failed = ?, input_file_id = COALESCE(?, input_file_id), output_file_id = ?,"
            " error_file_id = ?, created_at = COALESCE(created_at, ?),"
            " ended_at = COALESCE(ended_at, ?) WHERE token = ?",
            (info["id"], info["status"], counts.get("total", 0), counts.get("completed", 0),
             counts.get("failed", 0), info.get("input_file_id"), info.get("output_file_id"),
             info.get("error_file_id"), _stamp(info.get("created_at")),  # type: ignore[arg-type]
             _stamp(ended), token))  # type: ignore[arg-type]

    def abandon(self, token: str, reason: str) -> int:
        """The batch was never created (or is gone): its tasks go back to send."""
        back = self.unbatch(token, reason)
        self._commit("UPDATE batches SET status = ?, ended_at = ?, collected_at = ?"
                     " WHERE token = ?", (ABANDONED, _now(), _now(), token))
        return back

    def unbatch(self, token: str, reason: str) -> int:
        """Tasks of this batch still waiting for an answer go back to `pending`."""
        cursor = self._ledger._write(
            "UPDATE tasks SET state = ?, batch = NULL, reason = ?, updated_at = ?"
            " WHERE batch = ? AND state = ?",
            (State.PENDING.value, reason, _now(), token, State.BATCHED.value))
        self._ledger.flush()
        return cursor.rowcount

    def back_to_send(self, task_id: str, fingerprint: str, reason: str) -> None:
        """One task its batch never ran (e.g. batch_expired): `pending` again."""
        self._ledger._set_task(task_id, fingerprint, State.PENDING, reason=reason, batch=None)
        self._ledger.flush()

    def collected(self, token: str) -> None:
        self._commit("UPDATE batches SET collected_at = ? WHERE token = ?", (_now(), token))

    def waiting(self, token: str) -> dict[str, str]:
        """task id -> fingerprint of the tasks still batched in this batch."""
        rows = self._db.execute("SELECT id, fingerprint FROM tasks WHERE batch = ? AND state = ?",
                                (token, State.BATCHED.value))
        return dict(rows)

    def members(self, token: str) -> dict[str, str]:
        """task id -> fingerprint of every task sent in this batch, waiting or not."""
        return dict(self._db.execute("SELECT id, fingerprint FROM tasks WHERE batch = ?",
                                     (token,)))

    def open(self) -> list[BatchRow]:
        """Batches not yet collected, oldest first."""
        return list(self._rows("WHERE collected_at IS NULL"))

    def all(self) -> list[BatchRow]:
        return list(self._rows(""))

    def _rows(self, where: str) -> Iterator[BatchRow]:
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM batches {where} ORDER BY intended_at"):
            yield BatchRow(*row)

    def _commit(self, sql: str, params: tuple[object, ...]) -> None:
        self._ledger._write(sql, params)
        self._ledger.flush()
