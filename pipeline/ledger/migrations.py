"""The ledger's schema: an append-only list of migrations, and the one function that applies them.

It owns the SQL that creates and changes the ledger's tables, and the schema
version, kept in `PRAGMA user_version` (migration N done ⇔ user_version ≥ N).
`migrate` brings a freshly opened connection up to date, once, even when two
processes open an old file at the same moment.

It must never edit, reorder or remove a migration that has shipped (a change is
a new migration appended at the end), never read or write a task's data, and
never commit outside `migrate`: each migration runs inside `migrate`'s
transaction, so it must not use executescript() or COMMIT itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import InputError

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []
migration = MIGRATIONS.append


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    # One statement per execute(): executescript() would COMMIT the migration's transaction.
    db.execute(
        """CREATE TABLE runs (
        id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
        manifest TEXT NOT NULL, options TEXT NOT NULL, exit_code INTEGER, counts TEXT,
        cost REAL NOT NULL DEFAULT 0  -- USD of this run's successes: survives later re-runs
        )"""
    )
    db.execute(
        """CREATE TABLE tasks (
        id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'submitted', 'succeeded', 'failed', 'unknown')),
        terminal INTEGER NOT NULL DEFAULT 0, reason TEXT, error_type TEXT, error_code TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, outputs TEXT NOT NULL DEFAULT '[]', sidecar TEXT,
        model TEXT, prompt TEXT, cost REAL, usage TEXT, request_id TEXT, run_id INTEGER,
        updated_at TEXT NOT NULL, first_input TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE attempts (
        id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, run_id INTEGER, number INTEGER NOT NULL,
        started_at TEXT NOT NULL, latency_s REAL, status INTEGER, error_type TEXT,
        error_code TEXT, message TEXT, request_id TEXT,
        outcome TEXT NOT NULL
            CHECK (outcome IN ('succeeded', 'retry', 'failed', 'unknown', 'aborted'))
        )"""
    )
    db.execute("CREATE INDEX attempts_by_task ON attempts (task_id, number)")
    db.execute(
        """CREATE TABLE file_hashes (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL
        ) WITHOUT ROWID"""
    )


@migration
def m002_file_format(db: sqlite3.Connection) -> None:
    # The format sniffed when the file was hashed: a re-run's preflight trusts it for an
    # unchanged (path, size, mtime) instead of opening 100k files again.
    db.execute("ALTER TABLE file_hashes ADD COLUMN format TEXT")


@migration
def m003_reviews(db: sqlite3.Connection) -> None:
    # A reviewer's decisions, one row each: the latest about a task's current result counts
    # (reviews.py). `result_at` is the task's `updated_at` when it was reviewed: a new
    # result (a redo, a changed prompt) has no decision until someone looks at it.
    db.execute(
        """CREATE TABLE reviews (
        id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
        result_at TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
        note TEXT, decided_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX reviews_by_task ON reviews (task_id, id)")


@migration
def m004_outputs_are_ours(db: sqlite3.Connection) -> None:
    # `claims`: every output stem (path without its image extension) a task was about to
    # write, recorded before its request went out, so a glob never takes our own file for
    # an input, also after a crash between the image and its sidecar.
    db.execute(
        """CREATE TABLE claims (
        stem TEXT PRIMARY KEY, task_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
        suffixes TEXT NOT NULL  -- the image extensions the stem may carry: ".png .jpeg .webp"
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX claims_by_task ON claims (task_id)")
    # What a success wrote: [[path, size, mtime_ns, sha256], ...] outputs then sidecar, so
    # "done" means these very files, not any file at those paths; and the endpoint
    # ("provider@host") that produced it, so a rehearsal is never taken for the real thing.
    db.execute("ALTER TABLE tasks ADD COLUMN written TEXT")
    db.execute("ALTER TABLE tasks ADD COLUMN endpoint TEXT")
    # Each input fully decoded once per content: 'ok' or what is wrong with it.
    db.execute("ALTER TABLE file_hashes ADD COLUMN verdict TEXT")
    db.execute("CREATE INDEX file_hashes_by_sha256 ON file_hashes (sha256)")
    # Outputs of finished work are ours from the start.
    rows = db.execute("SELECT id, fingerprint, outputs FROM tasks WHERE outputs != '[]'")
    for task_id, fp, outputs in rows.fetchall():
        for path in json.loads(outputs):
            stem, suffix = os.path.splitext(path)
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                       (stem, task_id, fp, suffix))


@migration
def m005_batches(db: sqlite3.Connection) -> None:
    # Batch mode (DESIGN.md "Batch mode"). A row is written BEFORE its batch is created:
    # `token` goes into the batch's metadata too, so a run killed between creating the
    # batch and recording its `id` finds it again by listing the provider's batches.
    db.execute(
        """CREATE TABLE batches (
        token TEXT PRIMARY KEY, id TEXT UNIQUE, provider TEXT NOT NULL, endpoint TEXT,
        input_file_id TEXT, status TEXT NOT NULL, total INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
        output_file_id TEXT, error_file_id TEXT, run_id INTEGER,
        intended_at TEXT NOT NULL, created_at TEXT, ended_at TEXT, collected_at TEXT
        )"""
    )
    # `batched` is a new task state, and SQLite cannot change a CHECK: the table is
    # rebuilt with it, and with the token of the batch a batched task is in.
    db.execute(
        """CREATE TABLE tasks_v5 (
        id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            ('pending', 'submitted', 'batched', 'succeeded', 'failed', 'unknown')),
        terminal INTEGER NOT NULL DEFAULT 0, reason TEXT, error_type TEXT, error_code TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, outputs TEXT NOT NULL DEFAULT '[]', sidecar TEXT,
        model TEXT, prompt TEXT, cost REAL, usage TEXT, request_id TEXT, run_id INTEGER,
        updated_at TEXT NOT NULL, first_input TEXT, written TEXT, endpoint TEXT, batch TEXT
        )"""
    )
    columns = ("id, fingerprint, state, terminal, reason, error_type, error_code, attempts,"
               " outputs, sidecar, model, prompt, cost, usage, request_id, run_id, updated_at,"
               " first_input, written, endpoint")
    db.execute(f"INSERT INTO tasks_v5 ({columns}) SELECT {columns} FROM tasks")
    db.execute("DROP TABLE tasks")
    db.execute("ALTER TABLE tasks_v5 RENAME TO tasks")
    db.execute("CREATE INDEX tasks_by_batch ON tasks (batch) WHERE batch IS NOT NULL")


@migration
def m006_input_dimensions(db: sqlite3.Connection) -> None:
    # Width and height as the full check decoded them, beside its verdict: the cost
    # estimate counts input-image tokens from them instead of opening each input's header
    # again on every run. NULL on rows checked before this: the next run reads those
    # headers once and fills them in (manifest/inputs.py).
    db.execute("ALTER TABLE file_hashes ADD COLUMN width INTEGER")
    db.execute("ALTER TABLE file_hashes ADD COLUMN height INTEGER")


@migration
def m007_submitted_index(db: sqlite3.Connection) -> None:
    # Opening the ledger for a run turns a crashed run's `submitted` tasks into `unknown`:
    # without an index that scans every task (40 ms at 100k), on every run. Partial: only
    # tasks in flight are in it, a handful, so writes barely notice it.
    db.execute("CREATE INDEX tasks_submitted ON tasks (state) WHERE state = 'submitted'")


# A schema change is a new `@migration def m00N_...(db)` here, after the last one.


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply every migration `db` lacks, in one transaction; a file from a newer imgedit
    is an InputError. `db` must be in autocommit mode (isolation_level=None)."""
    # An up-to-date file needs no write lock: `status` beside a live run must not wait
    # for the run's pending batch.
    if db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
        return
    # IMMEDIATE takes the write lock before reading the version again, so two processes
    # opening an old file at once cannot both apply the same migration.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise InputError(
                f"{path}: this ledger was written by a newer imgedit (schema v{version}; this one"
                f" knows up to v{len(MIGRATIONS)}); upgrade imgedit or use another --ledger"
            )
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")  # transactional: part of this commit
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
