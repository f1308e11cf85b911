"""The ledger's batches: the migration that adds them, intent before creation, and the way
tasks go back to send."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from pipeline.ledger import migrations
from pipeline.ledger.batches import ABANDONED, SUBMITTING, Batches
from pipeline.ledger.plan import Category, categorise
from pipeline.ledger.records import TaskState
from pipeline.ledger.store import Ledger
from pipeline.task import State
from tests.ledger.test_ledger import make_task


def test_a_version_2_ledger_keeps_its_tasks_and_gains_batches(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        for step in migrations.MIGRATIONS[:2]:
            step(db)
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO tasks (id, fingerprint, state, updated_at, cost) VALUES "
                   "('kept', 'fp', 'succeeded', '2026-01-01T00:00:00+00:00', 0.5)")
        db.execute("COMMIT")
    with Ledger.open(path) as ledger:
        record = ledger.get("kept")
        assert record is not None and record.state is State.SUCCEEDED and record.cost == 0.5
        assert Batches(ledger).all() == []
        assert ledger.counts()["batched"] == 0


def test_intent_first_then_the_provider_s_view_then_collected(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        book = Batches(ledger)
        run = ledger.start_run(tmp_path / "job.yaml", {})
        pairs = [(make_task(tmp_path, t), f"fp-{t}") for t in ("a", "b", "c")]
        assert book.intend("tok", "openai", "https://api", run, pairs) == 3
        (row,) = book.open()
        assert (row.id, row.status, row.total) == (None, SUBMITTING, 3)
        assert book.waiting("tok") == {"a": "fp-a", "b": "fp-b", "c": "fp-c"}
        waiting = TaskState("fp-a", State.BATCHED, False, [])
        assert categorise(pairs[0][0], "fp-changed", waiting) is Category.BATCHED

        book.update("tok", {"id": "batch_1", "status": "expired", "created_at": 1_700_000_000,
                            "expired_at": 1_700_000_100, "output_file_id": "file-o",
                            "request_counts": {"total": 3, "completed": 1, "failed": 0}})
        ledger.mark_succeeded("a", "fp-a", [tmp_path / "a.png"], tmp_path / "a.json",
                              usage=None, cost=0.01, request_id=None)
        book.back_to_send("b", "fp-b", "batch_expired")
        assert book.unbatch("tok", "expired") == 1  # c: the one still waiting
        book.collected("tok")
        (row,) = book.all()
        assert (row.id, row.status, row.completed, row.output_file_id) == (
            "batch_1", "expired", 1, "file-o")
        assert row.ended and row.ended_at and row.collected_at and book.open() == []
        states = {t: ledger.get(t).state for t in "abc"}  # type: ignore[union-attr]
        assert states == {"a": State.SUCCEEDED, "b": State.PENDING, "c": State.PENDING}


def test_abandon_puts_every_task_back_and_closes_the_row(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        book = Batches(ledger)
        book.intend("tok", "openai", "https://api", 1, [(make_task(tmp_path, "a"), "fp")])
        assert book.abandon("tok", "never created") == 1
        (row,) = book.all()
        assert row.status == ABANDONED and book.open() == []
        record = ledger.get("a")
        assert record is not None and record.state is State.PENDING
        assert record.reason == "never created"
