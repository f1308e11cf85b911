"""What the ledger stores and hands out of a gateway's words is clean, also from a ledger
written before the rule (rows are cleaned on the way in and on the way out)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from pipeline.ledger.store import Attempt, Ledger, Outcome
from pipeline.task import Location, Task

KEY = "sk-abcdefghijklmnopqrstuvwxyz012345"
RAW = f"\x1b[2J\x1b[31mHTTP 400: bad key Bearer {KEY}\x07" + "x" * 50_000


def task(tmp_path: Path) -> Task:
    return Task(id="t1", images=(tmp_path / "a.png",), prompt="p",
                where=Location(tmp_path / "job.yaml", 1), root=tmp_path,
                fields={"model": "gpt-image-1"})


def test_messages_are_cleaned_on_the_way_in(tmp_path: Path) -> None:
    path = tmp_path / "job.ledger.sqlite"
    with Ledger.open(path) as ledger:
        run = ledger.start_run(tmp_path / "job.yaml", {})
        ledger.mark_submitted(run, task(tmp_path), "fp")
        ledger.record_attempt(Attempt(task_id="t1", run_id=run, started_at=datetime.now(UTC),
                                      outcome=Outcome.FAILED, message=RAW))
        ledger.mark_failed("t1", "fp", terminal=True, reason=RAW, error_type="status",
                           error_code="bad")
        ledger.flush()
    with closing(sqlite3.connect(path)) as db:
        stored = db.execute("SELECT reason FROM tasks").fetchone()[0] + db.execute(
            "SELECT message FROM attempts").fetchone()[0]
    assert KEY not in stored and "\x1b" not in stored and "\x07" not in stored
    assert len(stored) < 2 * 2100 and "Bearer ***" in stored


def test_an_old_ledgers_rows_are_cleaned_on_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "job.ledger.sqlite"
    with Ledger.open(path) as ledger:
        run = ledger.start_run(tmp_path / "job.yaml", {})
        ledger.mark_submitted(run, task(tmp_path), "fp")
        ledger.flush()
    with closing(sqlite3.connect(path)) as db:  # as an imgedit before the rule wrote them
        db.execute("UPDATE tasks SET state = 'failed', reason = ?", (RAW,))
        db.execute("INSERT INTO attempts (task_id, run_id, number, started_at, message,"
                   " outcome) VALUES ('t1', 1, 1, ?, ?, 'failed')",
                   (datetime.now(UTC).isoformat(), RAW))
        db.execute("UPDATE runs SET cost = -100000")  # a negative usage, once priced
        db.commit()
    with Ledger.open(path) as ledger:
        record = ledger.get("t1")
        (first,) = ledger.attempts("t1")
        assert record is not None and record.reason is not None and first.message is not None
        for text in (record.reason, first.message):
            assert KEY not in text and "\x1b" not in text and len(text) < 2100
        assert ledger.spent() == 0.0 and ledger.spent(1) == 0.0
