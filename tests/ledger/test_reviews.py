"""Review decisions in a real ledger file: the latest about the current result counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.ledger.migrations import MIGRATIONS
from pipeline.ledger.reviews import NOTE_CHARS, Decision, Reviews
from pipeline.ledger.store import Ledger
from tests.ledger.test_ledger import make_task


def succeed(book: Ledger, tmp_path: Path, task_id: str, fp: str = "fp1") -> None:
    book.mark_submitted(1, make_task(tmp_path, task_id), fp)
    out = tmp_path / f"{task_id}.edited.png"
    book.mark_succeeded(task_id, fp, [out], out.with_suffix(".json"), usage=None, cost=0.01,
                        request_id="req")


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "job.ledger.sqlite") as ledger:
        for task_id in ("a", "b", "c"):
            succeed(ledger, tmp_path, task_id)
        yield ledger


def test_decisions_are_committed_at_once_and_the_latest_counts(book: Ledger,
                                                                 tmp_path: Path) -> None:
    reviews = Reviews(book)
    reviews.decide("a", "approved")
    reviews.decide("b", Decision.REJECTED, "  collar still red  ")
    reviews.decide("b", "approved")
    reviews.decide("c", "rejected", "x" * (NOTE_CHARS + 50))
    # another process sees them without any flush or close
    with closing(sqlite3.connect(tmp_path / "job.ledger.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM reviews").fetchone() == (4,)
    now = reviews.current()
    assert {k: v.decision.value for k, v in now.items()} == {
        "a": "approved", "b": "approved", "c": "rejected"}
    assert now["c"].note is not None and len(now["c"].note) == NOTE_CHARS
    assert reviews.counts() == {"approved": 2, "rejected": 1}
    assert reviews.rejected() == {"c"}


def test_undo_removes_the_latest_and_the_one_before_counts_again(book: Ledger) -> None:
    reviews = Reviews(book)
    reviews.decide("a", "rejected", "too dark")
    reviews.decide("a", "approved")
    again = reviews.undo("a")
    assert again is not None and again.decision is Decision.REJECTED and again.note == "too dark"
    assert reviews.undo("a") is None
    assert reviews.undo("a") is None  # nothing left: a no-op, not an error
    assert reviews.current() == {}


def test_a_new_result_starts_unreviewed(book: Ledger, tmp_path: Path) -> None:
    reviews = Reviews(book)
    reviews.decide("a", "rejected", "blurry")
    reviews.decide("b", "approved")
    succeed(book, tmp_path, "a")  # redone: same fingerprint, a new result
    succeed(book, tmp_path, "b", fp="fp2")  # its prompt changed
    assert reviews.current() == {}
    assert reviews.rejected() == set()
    assert reviews.undo("a") is None  # the old decision is history, not undone by accident
    with closing(sqlite3.connect(tmp_path / "job.ledger.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM reviews").fetchone() == (2,)


def test_only_a_result_can_be_judged(book: Ledger, tmp_path: Path) -> None:
    reviews = Reviews(book)
    book.mark_failed("c", "fp1", terminal=True, reason="moderation_blocked", error_type=None,
                     error_code=None)
    with pytest.raises(InputError, match="no result to review"):
        reviews.decide("c", "approved")
    with pytest.raises(InputError, match="no result to review"):
        reviews.decide("nope", "approved")
    with pytest.raises(ValueError):
        reviews.decide("a", "maybe")


def test_an_older_ledger_gains_the_reviews_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for number, step in enumerate(MIGRATIONS[:2], start=1):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
    with Ledger.open(path) as ledger:
        succeed(ledger, tmp_path, "a")
        Reviews(ledger).decide("a", "approved")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT task_id, decision FROM reviews").fetchall() == [
            ("a", "approved")]
