"""A success whose ledger row died with the run (a kill -9 before the batch's commit)
is adopted from its outputs and sidecar by the next run, not paid for again."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from tests.conftest import Cli
from tests.run.test_run import catalog, ledger_rows


def test_a_success_the_ledger_never_committed_is_adopted_not_resent(tmp_path: Path, cli: Cli,
                                                                     sim) -> None:
    catalog(tmp_path)
    assert cli("run", "job.yaml", "--base-url", sim.base_url).returncode == 0
    sent = sim.stats().requests
    # What a kill -9 between the writes and the commit leaves: each task still `submitted`.
    with closing(sqlite3.connect(tmp_path / "job.ledger.sqlite")) as db, db:
        db.execute("UPDATE tasks SET state = 'submitted', outputs = '[]', sidecar = NULL")

    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0
    assert summary["plan"] == {"done": 4}
    assert summary["possible_double_charges"] == 0
    assert sim.stats().requests == sent  # nothing sent again
    assert ledger_rows(tmp_path, "select state, count(*) from tasks group by state") == [
        ("succeeded", 4)]
