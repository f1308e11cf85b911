"""The ledger: one SQLite file per manifest that remembers what was asked, paid for and returned.

Owns each task's current state, one row per HTTP attempt, one row per run, and
the (path, size, mtime) → sha256 cache of input files. The schema those rows
live in (an append-only list of migrations; the version in `PRAGMA
user_version`) is `migrations.py`'s, applied by `Ledger.open`.

It must never store an API key, never block the event loop for long (calls are
synchronous and take microseconds: writes are batched and nothing is fsynced
per call), and never lose a success: `mark_succeeded` joins the batch (committed
with the next `submitted` row, or within FLUSH_EVERY_SECONDS), and a kill -9
before that commit leaves the task `submitted`, then `unknown`, whose outputs
and sidecar, written before the call, make the next run's plan adopt it.

Durability: WAL with `synchronous=NORMAL`. A commit appends its frames to the
WAL with write(); they sit in the OS page cache, so a kill -9 of this process
loses nothing committed. Only a power cut or kernel crash can lose the last
commits, and that costs a re-sent request, never a corrupt ledger.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from pipeline.config.redact import clean, clean_or_none
from pipeline.errors import InputError
from pipeline.ledger import lock
from pipeline.ledger.hashes import FileHashes
from pipeline.ledger.migrations import migrate
from pipeline.ledger.ours import Claims, Written
from pipeline.ledger.records import Attempt, Outcome, TaskRecord, TaskState, task_record
from pipeline.task import State, Task

FLUSH_EVERY_WRITES = 500
FLUSH_EVERY_SECONDS = 0.2
BUSY_TIMEOUT_MS = 5000
INTERRUPTED = "the previous run stopped while this request was in flight; it may have been billed"
# Option names that might carry a credential: dropped before options reach the file.
_SECRET_WORDS = ("key", "token", "secret", "authorization")


def default_path(manifest_path: Path) -> Path:
    """`<manifest folder>/<manifest stem>.ledger.sqlite`."""
    return manifest_path.with_name(f"{manifest_path.stem}.ledger.sqlite")


# --- the ledger -----------------------------------------------------------------------------

_TASK_COLUMNS = (
    "id, fingerprint, state, terminal, reason, error_type, error_code, attempts, outputs,"
    " sidecar, model, prompt, cost, usage, request_id, run_id, updated_at, first_input"
)


class Ledger(Claims, FileHashes):
    """The ledger of one manifest. Synchronous; use from one thread (the event loop's)."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float]):
        self._db = db
        self._clock = clock
        self._pending = 0
        self._last_commit = clock()
        self._closed = False
        self._near, self._older = {}, {}  # FileHashes: rows of the inputs' chunk, and the last
        self._checked = {}  # FileHashes: hashes the check pass just vouched for

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        recover: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Ledger:
        """Open (creating and migrating as needed) the ledger at `path`.

        Recovery turns the tasks a crashed run left `submitted` into `unknown`. It is
        only safe when no run is live, so by default (recover=None) it happens when this
        process holds the ledger's RunLock: `run` recovers; `status` and `report`, which
        run beside a live run, never relabel its in-flight tasks.
        """
        if recover is None:
            recover = lock.holds(path)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, to batch writes.
            db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(f"{path}: cannot open the ledger ({exc})") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # see the module docstring: kill -9 safe
            migrate(db, path)
            if recover:
                db.execute(
                    "UPDATE tasks SET state = 'unknown', reason = ?, updated_at = ?"
                    " WHERE state = 'submitted'",
                    (INTERRUPTED, _now()),
                )
        except sqlite3.DatabaseError as exc:
            db.close()
            raise InputError(corrupt_message(path, exc)) from exc
        except BaseException:
            db.close()
            raise
        return cls(db, clock)

    def close(self) -> None:
        """Commit what is pending and close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing: batched into one open transaction, committed by flush() --

    def flush(self) -> None:
        """Commit pending writes now."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        self._pending = 0
        self._last_commit = self._clock()

    def _write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        if not self._db.in_transaction:
            # IMMEDIATE: take the write lock now (waiting up to busy_timeout) rather than
            # fail later when a read inside the transaction must become a write.
            self._db.execute("BEGIN IMMEDIATE")
        return self._db.execute(sql, params)

    def _wrote(self) -> None:
        self._pending += 1
        if (
            self._pending >= FLUSH_EVERY_WRITES
            or self._clock() - self._last_commit >= FLUSH_EVERY_SECONDS
        ):
            self.flush()

    def _set_task(self, task_id: str, fingerprint: str, state: State, **columns: Any) -> None:
        # Column names come from this module only, never from input.
        names = ["id", "fingerprint", "state", "updated_at", *columns]
        values = (task_id, fingerprint, state.value, _now(), *columns.values())
        updates = ", ".join(f"{n} = excluded.{n}" for n in names[1:])
        self._write(
            f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            f" ON CONFLICT (id) DO UPDATE SET {updates}",
            values,
        )

    def start_run(self, manifest: Path, options: Mapping[str, Any]) -> int:
        cursor = self._write(
            "INSERT INTO runs (started_at, manifest, options) VALUES (?, ?, ?)",
            (_now(), str(manifest), _json(_without_secrets(options))),
        )
        self.flush()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(self, run_id: int, exit_code: int, counts: Mapping[str, int]) -> None:
        self._write(
            "UPDATE runs SET finished_at = ?, exit_code = ?, counts = ? WHERE id = ?",
            (_now(), exit_code, _json(dict(counts)), run_id),
        )
        self.flush()

    def mark_submitted(self, run_id: int, task: Task, fingerprint: str, *,
                       commit: bool = True) -> None:
        """Committed before the request leaves: after a crash the task must show as
        possibly billed. `commit=False` leaves the commit to the caller, who must make it
        before the request leaves (run/commits.py: requests leaving together share one)."""
        first = str(task.images[0]) if task.images else None
        self._set_task(
            task.id, fingerprint, State.SUBMITTED, terminal=0, reason=None, error_type=None,
            error_code=None, model=task.model, prompt=task.prompt, run_id=run_id,
            first_input=first,
        )
        self.claim(task, fingerprint)
        if commit:
            self.flush()

    def record_attempt(self, attempt: Attempt) -> int:
        """Log one HTTP attempt (batched) and return its number (1-based per task)."""
        outcome = Outcome(attempt.outcome)  # a bad label fails before anything is written
        row = self._write(
            "UPDATE tasks SET attempts = attempts + 1 WHERE id = ? RETURNING attempts",
            (attempt.task_id,),
        ).fetchone()
        number = attempt.number
        if number is None:
            number = row[0] if row else 1 + self._scalar(
                "SELECT COUNT(*) FROM attempts WHERE task_id = ?", (attempt.task_id,)
            )
        self._write(
            "INSERT INTO attempts (task_id, run_id, number, started_at, latency_s, status,"
            " error_type, error_code, message, request_id, outcome)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                attempt.task_id, attempt.run_id, number, _timestamp(attempt.started_at),
                attempt.latency_s, attempt.status, attempt.error_type, attempt.error_code,
                clean_or_none(attempt.message), attempt.request_id, outcome.value,
            ),
        )
        self._wrote()
        return number

    def mark_succeeded(
        self,
        task_id: str,
        fingerprint: str,
        outputs: list[Path],
        sidecar: Path,
        *,
        usage: Mapping[str, Any] | None,
        cost: float | None,
        request_id: str | None,
        written: Sequence[Written] = (),
        endpoint: str | None = None,
    ) -> None:
        """Batched (see the module docstring): the outputs and the sidecar are on disk
        already, and they are the proof a kill -9 cannot take away.

        `written`: each output and the sidecar as written (see ours.py); `endpoint`: the
        "provider@host" that answered."""
        self._set_task(
            task_id, fingerprint, State.SUCCEEDED, terminal=0, reason=None, error_type=None,
            error_code=None, outputs=_json([str(p) for p in outputs]), sidecar=str(sidecar),
            usage=None if usage is None else _json(dict(usage)), cost=cost,
            request_id=request_id, written=self.written_json(written) if written else None,
            endpoint=endpoint,
        )
        self.claim_written(task_id, fingerprint, written)
        self._write(
            "UPDATE runs SET cost = cost + ? WHERE id = (SELECT run_id FROM tasks WHERE id = ?)",
            (_usd(cost), task_id),
        )
        self._wrote()

    def add_spend(self, run_id: int, cost: float) -> None:
        """A paid answer we could not use: it costs the user all the same."""
        self._write("UPDATE runs SET cost = cost + ? WHERE id = ?", (_usd(cost), run_id))
        self._wrote()

    def mark_failed(
        self,
        task_id: str,
        fingerprint: str,
        *,
        terminal: bool,
        reason: str,
        error_type: str | None,
        error_code: str | None,
    ) -> None:
        self._set_task(
            task_id, fingerprint, State.FAILED, terminal=int(terminal), reason=clean(reason),
            error_type=error_type, error_code=error_code,
        )
        self._wrote()

    def mark_unknown(self, task_id: str, fingerprint: str, *, reason: str) -> None:
        self._set_task(task_id, fingerprint, State.UNKNOWN, terminal=0, reason=clean(reason))
        self._wrote()

    def connection(self) -> sqlite3.Connection:
        """The open connection, pending writes committed: for the ledger's own modules
        that keep their SQL beside their concept (reviews.py)."""
        self.flush()
        return self._db

    # -- reading: sees this connection's own pending writes --

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self._db.execute(sql, params).fetchone()
        return row[0] if row else None

    def get(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        found = row.fetchone()
        return task_record(found) if found else None

    def records(self) -> Iterator[TaskRecord]:
        """Every task, ordered by id, streamed from a cursor (flat memory for 100k tasks)."""
        for row in self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks ORDER BY id"):
            yield task_record(row)

    def states(self, ids: Sequence[str] | None = None) -> dict[str, TaskState]:
        """task id → (fingerprint, state, terminal, outputs) for `ids` (all when None).
        Planning asks in chunks, so 100k tasks never sit in one dict. `outputs` only
        when nothing is `written` (an older row): the record of each file says it all."""
        sql = ("SELECT id, fingerprint, state, terminal,"
               " CASE WHEN written IS NULL THEN outputs ELSE '[]' END, written, endpoint"
               " FROM tasks")
        if ids is None:
            rows = self._db.execute(sql)
        else:
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(f"{sql} WHERE id IN ({marks})", tuple(ids))
        loads, new = json.loads, tuple.__new__  # TaskState(...) goes through Python code
        return {
            id_: new(TaskState, (fp, _STATES[state], terminal == 1,
                                 loads(outputs) if outputs != "[]" else [],
                                 loads(written) if written else None, endpoint))
            for id_, fp, state, terminal, outputs, written, endpoint in rows
        }

    def counts(self) -> dict[str, int]:
        """Tasks by state; every state is present, 0 when none."""
        found = dict(self._db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"))
        return {state.value: found.get(state.value, 0) for state in State}

    def attempts(self, task_id: str) -> list[Attempt]:
        """A task's attempts, oldest first."""
        rows = self._db.execute(
            "SELECT task_id, run_id, number, started_at, latency_s, status, error_type,"
            " error_code, message, request_id, outcome FROM attempts WHERE task_id = ?"
            " ORDER BY number, id",
            (task_id,),
        )
        return [
            Attempt(
                task_id=r[0], run_id=r[1], number=r[2], started_at=datetime.fromisoformat(r[3]),
                latency_s=r[4], status=r[5], error_type=r[6], error_code=r[7],
                message=clean_or_none(r[8]),
                request_id=r[9], outcome=Outcome(r[10]),
            )
            for r in rows
        ]

    def paid_providers(self) -> set[str]:
        """Names of the providers whose runs recorded money."""
        rows = self._db.execute("SELECT DISTINCT json_extract(options, '$.provider') FROM runs"
                                " WHERE cost > 0").fetchall()
        return {str(r[0]) for r in rows if r[0] is not None}

    def spent(self, run_id: int | None = None) -> float:
        """USD recorded by mark_succeeded: in one run, or in every run of this ledger."""
        if run_id is None:
            # MAX: a ledger from before usage was checked may hold a negative cost.
            return float(self._scalar("SELECT COALESCE(SUM(MAX(cost, 0)), 0) FROM runs"))
        return max(0.0, float(self._scalar("SELECT cost FROM runs WHERE id = ?", (run_id,))
                              or 0.0))


_STATES = {state.value: state for state in State}  # a dict lookup: 100k rows in planning


def corrupt_message(path: Path | None, exc: Exception) -> str:
    where = f"{path}: " if path is not None else ""
    return (f"{where}the ledger is damaged ({exc}). Restore it from a backup, or move it"
            " aside (with its -wal and -shm files) and run again: the sidecars beside the"
            " results let the next run adopt finished work instead of paying for it again")


def _without_secrets(value: Any) -> Any:
    """Drop every mapping key that looks like it names a credential, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: _without_secrets(v)
            for k, v in value.items()
            if not any(word in str(k).lower() for word in _SECRET_WORDS)
        }
    if isinstance(value, list | tuple):
        return [_without_secrets(v) for v in value]
    return value


def _usd(cost: float | None) -> float:
    """A cost fit for runs.cost (NOT NULL): NaN, negative or missing count as nothing."""
    return cost if cost is not None and math.isfinite(cost) and cost > 0 else 0.0


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _timestamp(moment: datetime | float) -> str:
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.isoformat(timespec="microseconds")
