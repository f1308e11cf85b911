"""Our files are known as ours (issue 11 items 1, 9, 11, 13): a crash between an image
and its sidecar never wedges a glob manifest, another manifest's file is never taken
as done, a rehearsal is never the real thing, and dead runs' temp files go."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.simulator.app import SimulatorThread
from tests.conftest import Cli, tiny_image, write_manifest

Simulator = Callable[..., SimulatorThread]


def glob_job(folder: Path, count: int, *, name: str = "job.yaml",
             prompt: str = "Put it on white") -> Path:
    """A glob manifest whose outputs sit beside its inputs, the default template."""
    for i in range(count):
        tiny_image(folder / "catalog" / f"c{i:02d}.png", (10 * i, 80, 120))
    return write_manifest(folder, f"""
        version: 1
        defaults: {{model: gpt-image-1, quality: low, size: 1024x1024}}
        limits: {{rate: unlimited, concurrency: 2}}
        tasks:
          - glob: "catalog/*.png"
            prompt: {prompt}
        """, name=name)


def query(ledger: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(ledger)) as db:
        return db.execute(sql, params).fetchall()


def test_the_wedge_image_written_no_sidecar_task_submitted_completes(
        tmp_path: Path, cli: Cli, sim: SimulatorThread) -> None:
    """Build the state a kill -9 leaves between an image and its sidecar, then run."""
    glob_job(tmp_path, 3)
    run = ("run", "job.yaml", "--base-url", sim.base_url)
    assert cli(*run).returncode == 0
    ledger = tmp_path / "job.ledger.sqlite"
    # The crash state of c02: its image on disk, no sidecar, the task `submitted` with
    # no success recorded (what mark_submitted commits before the request goes out).
    (tmp_path / "catalog/c02.edited.json").unlink()
    with closing(sqlite3.connect(ledger)) as db, db:
        db.execute("UPDATE tasks SET state = 'submitted', outputs = '[]', sidecar = NULL,"
                   " written = NULL WHERE id = 'catalog/c02.png'")
    before = sim.stats().requests

    done = cli(*run)
    assert done.returncode == 0, done.stderr  # on main: exit 2, "would overwrite an input"
    assert sim.stats().requests == before + 1  # only c02 again: its sidecar never came
    ids = [r[0] for r in query(ledger, "SELECT id FROM tasks ORDER BY id")]
    assert ids == ["catalog/c00.png", "catalog/c01.png", "catalog/c02.png"]
    assert {r[0] for r in query(ledger, "SELECT state FROM tasks")} == {"succeeded"}
    sidecar = json.loads((tmp_path / "catalog/c02.edited.json").read_text())
    assert sidecar["task_id"] == "catalog/c02.png"
    assert cli(*run).returncode == 0  # and every run after


def test_another_manifests_file_is_never_taken_as_done(tmp_path: Path, cli: Cli,
                                                      sim: SimulatorThread) -> None:
    """Two manifests, one folder, the same outputs: the second names the clash."""
    glob_job(tmp_path, 2, name="a.yaml")
    glob_job(tmp_path, 2, name="b.yaml")  # the same work, asked by another manifest
    assert cli("run", "a.yaml", "--base-url", sim.base_url).returncode == 0
    sent = sim.stats().requests

    done = cli("run", "b.yaml", "--base-url", sim.base_url)
    assert done.returncode == 2, done.stdout
    assert "catalog/c00.edited.png already exists and is not the result of task" in done.stderr
    assert "its sidecar says task 'catalog/c00.png' of a.yaml" in done.stderr
    assert "Traceback" not in done.stderr
    assert sim.stats().requests == sent  # nothing sent, nothing overwritten
    assert cli("validate", "b.yaml").returncode == 2  # validate says the same


def test_a_result_replaced_behind_our_back_is_not_done(tmp_path: Path, cli: Cli,
                                                      sim: SimulatorThread) -> None:
    glob_job(tmp_path, 2)
    run = ("run", "job.yaml", "--base-url", sim.base_url, "--json")
    assert cli.json(*run)[0] == 0
    # Same path, other bytes (and size): the ledger's record no longer matches it.
    Image.new("RGB", (5, 5), (1, 2, 3)).save(tmp_path / "catalog/c01.edited.png")
    code, summary = cli.json(*run)
    assert (code, summary["plan"], summary["sent"]) == (0, {"done": 1, "changed": 1}, 1)
    # Only the mtime moved (a copy, a restore): the same bytes, still done.
    out = tmp_path / "catalog/c00.edited.png"
    os.utime(out, ns=(0, out.stat().st_mtime_ns + 10**9))
    code, summary = cli.json(*run)
    assert (code, summary["plan"], summary["sent"]) == (0, {"done": 2}, 0)


def test_a_rehearsal_is_not_the_real_thing(tmp_path: Path, cli: Cli,
                                          simulator: Simulator) -> None:
    """On the in-process simulator, then on a second gateway (another base URL) standing
    in for the real provider: every task is sent again, and the plan says why."""
    glob_job(tmp_path, 3)
    code, summary = cli.json("run", "job.yaml", "--provider", "simulator")
    assert (code, summary["sent"]) == (0, 3)
    sidecar = json.loads((tmp_path / "catalog/c00.edited.json").read_text())
    assert sidecar["endpoint"] == "simulator"

    real = simulator()
    plan = cli("validate", "job.yaml", env={"IMGEDIT_BASE_URL": real.base_url})
    assert "3 tasks (rehearsed 3); would send 3" in plan.stdout, plan.stderr
    code, summary = cli.json("run", "job.yaml", "--base-url", real.base_url)
    assert (code, summary["sent"], summary["plan"]) == (0, 3, {"rehearsed": 3})
    assert real.stats().succeeded == 3
    rows = query(tmp_path / "job.ledger.sqlite", "SELECT DISTINCT endpoint FROM tasks")
    assert rows == [("wenwen@127.0.0.1",)]
    # And a lost ledger does not turn the rehearsal's sidecars back into done work.
    assert cli.json("run", "job.yaml", "--base-url", real.base_url)[1]["sent"] == 0


def test_dead_runs_temp_files_are_removed_and_never_inputs(tmp_path: Path, cli: Cli,
                                                           sim: SimulatorThread) -> None:
    glob_job(tmp_path, 1)
    catalog = tmp_path / "catalog"
    dead = catalog / ".imgedit-999999999-x1.part"  # no such pid
    old = catalog / ".imgedit-ab12cd.part"  # from before temp names carried the pid
    live = catalog / f".imgedit-{os.getpid()}-x2.part"  # a live process: maybe writing now
    for path in (dead, old, live):
        path.write_bytes(b"\x89PNG half")
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
        tasks:
          - glob: "catalog/*.png"
            prompt: Put it on white
          - glob: "catalog/.*"
            prompt: Put it on white
        """)
    tiny_image(catalog / ".hidden.png")
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 0, done.stderr  # `.*` took .hidden.png, none of our temps
    assert not dead.exists() and not old.exists()
    assert live.exists()
    assert sim.stats().requests == 2


def test_a_key_with_a_line_break_is_a_config_error(tmp_path: Path, cli: Cli) -> None:
    glob_job(tmp_path, 1)
    done = cli("run", "job.yaml", "--base-url", "http://127.0.0.1:9",
               env={"IMGEDIT_API_KEY": "sk-abc\r\nX-Evil: 1"})
    assert done.returncode == 2
    assert "contains a control character" in done.stderr
    assert "Traceback" not in done.stderr and "sk-abc" not in done.stderr


def test_a_damaged_ledger_says_what_to_do(tmp_path: Path, cli: Cli,
                                         sim: SimulatorThread) -> None:
    glob_job(tmp_path, 40)
    run = ("run", "job.yaml", "--base-url", sim.base_url)
    assert cli(*run).returncode == 0
    ledger = tmp_path / "job.ledger.sqlite"
    with closing(sqlite3.connect(ledger)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = ledger.stat().st_size // 4096
    assert pages > 3
    with open(ledger, "r+b") as file:  # every page but the schema's, torn
        file.seek(4096)
        file.write(b"\xa5" * 4096 * (pages - 1))
    done = cli(*run)
    assert done.returncode == 2, done.stderr
    assert "the ledger is damaged" in done.stderr and "move it aside" in done.stderr
    assert "Traceback" not in done.stderr

    for path in tmp_path.glob("job.ledger.sqlite*"):  # moved aside: the sidecars adopt
        path.rename(tmp_path / f"{path.name}.bad")
    code, summary = cli.json(*run)
    assert (code, summary["sent"], summary["plan"]) == (0, 0, {"done": 40})
