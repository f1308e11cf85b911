"""Opening a ledger for a run relabels a crashed run's in-flight tasks: through an index
of the `submitted` ones, not a scan of every task on every run."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from pipeline.ledger.store import INTERRUPTED, Ledger
from pipeline.task import Location, State, Task

RECOVERY = ("UPDATE tasks SET state = 'unknown', reason = ?, updated_at = ?"
            " WHERE state = 'submitted'")


def task(tmp_path: Path, task_id: str) -> Task:
    return Task(id=task_id, images=(tmp_path / f"{task_id}.png",), prompt="p",
                where=Location(tmp_path / "job.yaml", 3), root=tmp_path,
                fields={"model": "gpt-image-1"})


def test_a_crashed_runs_tasks_become_unknown_through_the_index(tmp_path: Path) -> None:
    path = tmp_path / "job.ledger.sqlite"
    with Ledger.open(path, recover=False) as ledger:
        run = ledger.start_run(tmp_path / "job.yaml", {})
        for task_id in ("a", "b", "c"):
            ledger.mark_submitted(run, task(tmp_path, task_id), "fp")
        ledger.mark_failed("c", "fp", terminal=True, reason="no", error_type=None,
                           error_code=None)
    with closing(sqlite3.connect(path)) as db:
        plan = db.execute(f"EXPLAIN QUERY PLAN {RECOVERY}", ("x", "y")).fetchall()
        assert "USING INDEX tasks_submitted" in " ".join(str(row) for row in plan), plan
    with Ledger.open(path, recover=True) as ledger:
        states = ledger.states()
        assert {k: v.state for k, v in states.items()} == {
            "a": State.UNKNOWN, "b": State.UNKNOWN, "c": State.FAILED}
        record = ledger.get("a")
        assert record is not None and record.reason == INTERRUPTED
        # The index follows the state: nothing is in flight now.
        assert ledger.counts()["submitted"] == 0
