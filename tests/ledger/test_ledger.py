"""The ledger against real SQLite files: schema, round trips, batching, crash durability."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.ledger import migrations
from pipeline.ledger.lock import RunLock
from pipeline.ledger.migrations import MIGRATIONS
from pipeline.ledger.store import (
    FLUSH_EVERY_SECONDS,
    FLUSH_EVERY_WRITES,
    INTERRUPTED,
    Attempt,
    Ledger,
    Outcome,
    default_path,
)
from pipeline.task import Location, State, Task


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_task(tmp_path: Path, task_id: str = "shirt", prompt: str = "Recolor navy") -> Task:
    return Task(
        id=task_id,
        images=(tmp_path / f"{task_id}.png",),
        prompt=prompt,
        where=Location(tmp_path / "job.yaml", 3),
        root=tmp_path,
        fields={"model": "gpt-image-1", "size": "1024x1024"},
    )


def attempt(task_id: str = "shirt", run_id: int = 1, **kw: object) -> Attempt:
    values: dict = {"outcome": Outcome.RETRY, "started_at": datetime.now(UTC), **kw}
    return Attempt(task_id=task_id, run_id=run_id, **values)


def query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """What another process would see: a separate raw connection."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "job.ledger.sqlite"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(path: Path, clock: FakeClock) -> Iterator[Ledger]:
    with Ledger.open(path, clock=clock) as opened:
        yield opened


# --- file and schema ---------------------------------------------------------------------


def test_default_path_sits_beside_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs" / "catalog.yaml"
    assert default_path(manifest) == tmp_path / "jobs" / "catalog.ledger.sqlite"


def test_new_file_gets_every_migration_in_wal_mode(ledger: Ledger, path: Path) -> None:
    assert query(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in query(path, "SELECT name FROM sqlite_master")}
    assert {"runs", "tasks", "attempts", "file_hashes"} <= tables


def test_migrations_apply_once_and_upgrade_an_old_file(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger.open(path) as old:  # a file at today's version, with data in it
        old.mark_submitted(old.start_run(tmp_path / "job.yaml", {}), make_task(tmp_path), "fp")
    applied: list[int] = []

    def m002_extra(db: sqlite3.Connection) -> None:
        applied.append(1)
        db.execute("ALTER TABLE tasks ADD COLUMN note TEXT")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, m002_extra])
    for _ in range(2):
        Ledger.open(path).close()
    assert applied == [1]  # the upgrade ran once; re-opening applied nothing
    assert query(path, "PRAGMA user_version") == [(len(MIGRATIONS) + 1,)]
    assert query(path, "SELECT id, note FROM tasks") == [("shirt", None)]


def test_a_ledger_from_a_newer_imgedit_is_refused(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(InputError, match="newer imgedit"):
        Ledger.open(path)


def test_a_file_that_is_no_database_is_refused(path: Path) -> None:
    path.write_bytes(b"this is a manifest, not a ledger\n" * 100)
    with pytest.raises(InputError, match=r"damaged.*move it aside"):
        Ledger.open(path)


# --- round trips ---------------------------------------------------------------------------


def test_submitted_then_attempts_then_failed(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run(tmp_path / "job.yaml", {"concurrency": 4})
    ledger.mark_submitted(run, make_task(tmp_path), "fp1")
    record = ledger.get("shirt")
    assert record is not None
    assert (record.state, record.fingerprint, record.run_id) == (State.SUBMITTED, "fp1", run)
    assert (record.model, record.prompt) == ("gpt-image-1", "Recolor navy")
    assert record.first_input == tmp_path / "shirt.png"

    first = attempt(run_id=run, status=429, error_type="rate_limit", request_id="req-1")
    assert ledger.record_attempt(first) == 1
    assert ledger.record_attempt(attempt(run_id=run, outcome=Outcome.FAILED, status=400)) == 2
    ledger.mark_failed(
        "shirt", "fp1", terminal=True, reason="moderation_blocked: refused",
        error_type="image_generation_user_error", error_code="moderation_blocked",
    )
    record = ledger.get("shirt")
    assert record is not None
    assert (record.state, record.terminal, record.attempts) == (State.FAILED, True, 2)
    assert record.reason == "moderation_blocked: refused"
    assert record.error_code == "moderation_blocked"
    logged = ledger.attempts("shirt")
    assert [a.number for a in logged] == [1, 2]
    assert logged[0] == Attempt(**{**first.__dict__, "number": 1})


def test_succeeded_round_trips_outputs_usage_and_cost(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run(tmp_path / "job.yaml", {})
    ledger.mark_submitted(run, make_task(tmp_path), "fp1")
    outputs = [tmp_path / "shirt.edited-0.png", tmp_path / "shirt.edited-1.png"]
    ledger.mark_succeeded(
        "shirt", "fp1", outputs, tmp_path / "shirt.edited-0.json",
        usage={"input_tokens": 10, "output_tokens": 4160}, cost=0.17, request_id="req-9",
    )
    record = ledger.get("shirt")
    assert record is not None
    assert (record.state, record.terminal, record.reason) == (State.SUCCEEDED, False, None)
    assert record.outputs == outputs
    assert record.sidecar == tmp_path / "shirt.edited-0.json"
    assert record.usage == {"input_tokens": 10, "output_tokens": 4160}
    assert (record.cost, record.request_id) == (0.17, "req-9")


def test_unknown_records_and_listings(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run(tmp_path / "job.yaml", {})
    for task_id in ("b", "a", "c"):
        ledger.mark_submitted(run, make_task(tmp_path, task_id), f"fp-{task_id}")
    ledger.mark_unknown("b", "fp-b", reason="read timeout after upload")
    ledger.mark_succeeded("c", "fp-c", [tmp_path / "c.png"], tmp_path / "c.json", usage=None,
                          cost=None, request_id=None)
    assert [r.id for r in ledger.records()] == ["a", "b", "c"]
    assert ledger.states() == {
        "a": ("fp-a", State.SUBMITTED, False, [], None, None),
        "b": ("fp-b", State.UNKNOWN, False, [], None, None),
        "c": ("fp-c", State.SUCCEEDED, False, [str(tmp_path / "c.png")], None, None),
    }
    assert ledger.counts() == {"pending": 0, "submitted": 1, "succeeded": 1, "failed": 0,
                               "unknown": 1}
    record = ledger.get("b")
    assert record is not None and record.reason == "read timeout after upload"
    assert ledger.get("missing") is None


def test_finish_run_and_money_spent_per_run(ledger: Ledger, path: Path, tmp_path: Path) -> None:
    first = ledger.start_run(tmp_path / "job.yaml", {})
    for task_id in ("a", "b"):
        ledger.mark_submitted(first, make_task(tmp_path, task_id), "fp")
        ledger.mark_succeeded(task_id, "fp", [], tmp_path / "x.json", usage=None, cost=0.25,
                              request_id=None)
    ledger.finish_run(first, 0, {"succeeded": 2})
    second = ledger.start_run(tmp_path / "job.yaml", {"force": True})
    ledger.mark_submitted(second, make_task(tmp_path, "a"), "fp")  # --force: paid again
    ledger.mark_succeeded("a", "fp", [], tmp_path / "x.json", usage=None, cost=0.25,
                          request_id=None)
    assert ledger.spent(first) == pytest.approx(0.5)  # a re-run does not rewrite history
    assert ledger.spent(second) == pytest.approx(0.25)
    assert ledger.spent() == pytest.approx(0.75)
    row = query(path, "SELECT exit_code, counts, finished_at IS NOT NULL FROM runs WHERE id = ?",
                (first,))
    assert row == [(0, '{"succeeded": 2}', 1)]


def test_options_never_keep_anything_named_like_a_key(ledger: Ledger, path: Path) -> None:
    ledger.start_run(
        path,
        {
            "concurrency": 8,
            "api_key": "sk-live-1",
            "IMGEDIT_API_KEY": "sk-live-2",
            "access_token": "t0k",
            "client_secret": "s3c",
            "headers": {"Authorization": "Bearer sk-live-3", "X-Title": "catalog"},
        },
    )
    (options,) = query(path, "SELECT options FROM runs")[0]
    assert json.loads(options) == {"concurrency": 8, "headers": {"X-Title": "catalog"}}
    assert "sk-live" not in options


# --- batching and durability ---------------------------------------------------------------


def test_batched_writes_are_invisible_to_others_until_flush(
    ledger: Ledger, path: Path, tmp_path: Path
) -> None:
    run = ledger.start_run(tmp_path / "job.yaml", {})
    ledger.mark_submitted(run, make_task(tmp_path), "fp")
    assert query(path, "SELECT state FROM tasks") == [("submitted",)]  # committed at once

    ledger.record_attempt(attempt(run_id=run))
    ledger.remember_hash(tmp_path / "shirt.png", 10, 123, "ab" * 32)
    ledger.mark_failed("shirt", "fp", terminal=False, reason="HTTP 503", error_type=None,
                       error_code=None)
    assert query(path, "SELECT COUNT(*) FROM attempts") == [(0,)]
    assert query(path, "SELECT COUNT(*) FROM file_hashes") == [(0,)]
    assert query(path, "SELECT state FROM tasks") == [("submitted",)]
    assert ledger.get("shirt").state == State.FAILED  # type: ignore[union-attr]  # own writes

    ledger.flush()
    assert query(path, "SELECT COUNT(*) FROM attempts") == [(1,)]
    assert query(path, "SELECT COUNT(*) FROM file_hashes") == [(1,)]
    assert query(path, "SELECT state FROM tasks") == [("failed",)]


def test_a_success_joins_the_batch_the_next_request_commits(ledger: Ledger, path: Path,
                                                            tmp_path: Path) -> None:
    """Its outputs and sidecar are on disk before the call: a kill -9 before this commit
    leaves the task unknown, and the next plan adopts it from them (test_crash.py)."""
    run = ledger.start_run(tmp_path / "job.yaml", {})
    ledger.mark_succeeded("shirt", "fp", [tmp_path / "o.png"], tmp_path / "o.json",
                          usage=None, cost=0.04, request_id="r")
    assert query(path, "SELECT COUNT(*) FROM tasks") == [(0,)]  # pending in the batch
    ledger.mark_submitted(run, make_task(tmp_path, "next"), "fp2")  # committed at once...
    assert query(path, "SELECT id, state FROM tasks ORDER BY id") == [  # ...and it with it
        ("next", "submitted"), ("shirt", "succeeded")]


def test_pending_writes_commit_after_the_flush_interval(
    ledger: Ledger, path: Path, clock: FakeClock, tmp_path: Path
) -> None:
    ledger.remember_hash(tmp_path / "a.png", 1, 1, "a" * 64)
    clock.now += FLUSH_EVERY_SECONDS / 2
    ledger.remember_hash(tmp_path / "b.png", 1, 1, "b" * 64)
    assert query(path, "SELECT COUNT(*) FROM file_hashes") == [(0,)]
    clock.now += FLUSH_EVERY_SECONDS / 2
    ledger.remember_hash(tmp_path / "c.png", 1, 1, "c" * 64)
    assert query(path, "SELECT COUNT(*) FROM file_hashes") == [(3,)]


def test_pending_writes_commit_after_enough_of_them(
    ledger: Ledger, path: Path, tmp_path: Path
) -> None:
    for i in range(FLUSH_EVERY_WRITES - 1):
        ledger.remember_hash(tmp_path / f"{i}.png", 1, 1, "a" * 64)
    assert query(path, "SELECT COUNT(*) FROM file_hashes") == [(0,)]
    ledger.remember_hash(tmp_path / "last.png", 1, 1, "a" * 64)
    assert query(path, "SELECT COUNT(*) FROM file_hashes") == [(FLUSH_EVERY_WRITES,)]


def test_close_commits_pending_writes(path: Path, clock: FakeClock, tmp_path: Path) -> None:
    with Ledger.open(path, clock=clock) as ledger:
        ledger.record_attempt(attempt())
        ledger.close()  # closing twice (here and on leaving `with`) is harmless
    with Ledger.open(path) as reopened:
        assert len(reopened.attempts("shirt")) == 1


def test_a_committed_success_survives_kill_9(path: Path, tmp_path: Path) -> None:
    """Committed with the next request's `submitted` row (before that, a kill -9 leaves it
    to the sidecar: the next plan adopts it, see test_crash.py)."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from pipeline.ledger.store import Ledger
        from tests.ledger.test_ledger import make_task
        ledger = Ledger.open(Path({str(path)!r}))
        ledger.mark_succeeded("shirt", "fp", [Path("o.png")], Path("o.json"),
                              usage={{"output_tokens": 1}}, cost=0.04, request_id="req-1")
        ledger.mark_submitted(1, make_task(Path({str(tmp_path)!r}), "next"), "fp2")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with Ledger.open(path) as reopened:
        record = reopened.get("shirt")
    assert record is not None
    assert (record.state, record.request_id, record.cost) == (State.SUCCEEDED, "req-1", 0.04)


def test_the_run_that_takes_the_lock_turns_in_flight_tasks_into_unknown(
    path: Path, tmp_path: Path
) -> None:
    crashed = Ledger.open(path)  # a run that stops without closing (as kill -9 would)
    crashed.mark_submitted(crashed.start_run(tmp_path / "job.yaml", {}), make_task(tmp_path), "f")
    crashed.close()
    with Ledger.open(path) as status:  # no lock: maybe beside a live run, so no relabelling
        assert status.get("shirt").state == State.SUBMITTED  # type: ignore[union-attr]
    with RunLock(path), Ledger.open(path) as next_run:
        record = next_run.get("shirt")
    assert record is not None
    assert (record.state, record.reason) == (State.UNKNOWN, INTERRUPTED)


def test_status_opens_beside_a_run_with_a_pending_batch(ledger: Ledger, path: Path) -> None:
    ledger.record_attempt(attempt())  # the run now holds SQLite's write lock until it flushes
    with Ledger.open(path) as status:  # must not wait for that lock (busy_timeout is 5 s)
        assert status.attempts("shirt") == []
    ledger.flush()
    with Ledger.open(path) as status:
        assert len(status.attempts("shirt")) == 1


def test_attempt_times_may_be_unix_seconds(ledger: Ledger) -> None:
    ledger.record_attempt(attempt(started_at=1_700_000_000.25, outcome="unknown"))
    (logged,) = ledger.attempts("shirt")
    assert logged.started_at == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert logged.outcome is Outcome.UNKNOWN
    with pytest.raises(ValueError):
        ledger.record_attempt(attempt(outcome="exploded"))
