"""kill -9 at random moments of a run, then run again until it finishes.

The contract (DESIGN.md, Reliability): each task ends with exactly one success,
every output file is a whole valid image, and nothing done is re-sent. "Done"
is judged from what survives a kill, the strict way: a task whose output and
sidecar were on disk, or whose success was in the ledger, when the run died
must never reach the simulator again. A task killed between the answer and
the write may be sent again (that answer was lost with the process); the
simulator's counters bound such waste by the number of kills.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.ledger.fingerprint import idempotency_key
from pipeline.simulator.app import SimulatorThread
from tests.conftest import Cli, tiny_image, wait_until, write_manifest

pytestmark = pytest.mark.slow

TASKS = 30
CONCURRENCY = 4
KILLS = 8
SEED = int(os.environ.get("IMGEDIT_CRASH_SEED", "20240611"))  # another seed: another scenario


def write_job(folder: Path) -> list[str]:
    lines = ["version: 1",
             "defaults: {model: gpt-image-1, quality: low, size: 1024x1024}",
             f"limits: {{rate: unlimited, concurrency: {CONCURRENCY}}}",
             "tasks:"]
    ids = [f"t{i:02d}" for i in range(TASKS)]
    for i, task_id in enumerate(ids):
        tiny_image(folder / "in" / f"{task_id}.png", (8 * i, 100, 200 - 6 * i))
        lines += [f"  - id: {task_id}", f"    images: in/{task_id}.png",
                  "    prompt: Put the product on a pure white background"]
    write_manifest(folder, "\n".join(lines) + "\n")
    return ids


def query(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(folder / "job.ledger.sqlite")) as db:
        return db.execute(sql).fetchall()


def done_after_the_kill(folder: Path, ids: list[str]) -> set[str]:
    """Idempotency-Keys of tasks whose work survived: output and sidecar on disk (both are
    written atomically, so existing means whole), or a success recorded in the ledger."""
    done = set()
    for task_id in ids:
        sidecar = folder / "in" / f"{task_id}.edited.json"
        if sidecar.exists() and (folder / "in" / f"{task_id}.edited.png").exists():
            done.add(idempotency_key(task_id, json.loads(sidecar.read_text())["fingerprint"]))
    if (folder / "job.ledger.sqlite").exists():
        rows = query(folder, "SELECT id, fingerprint FROM tasks WHERE state = 'succeeded'")
        done |= {idempotency_key(task_id, fp) for task_id, fp in rows}
    return done


def run_and_kill(cli: Cli, run: tuple[str, ...], sim: SimulatorThread,
                 rng: random.Random) -> tuple[int, bool]:
    """Start a run and SIGKILL it at a seeded random point: (its exit code, killed?)."""
    proc = cli.popen(*run)
    try:
        if rng.random() < 0.25:  # anywhere, startup and planning included
            time.sleep(rng.uniform(0.0, 0.6))
        else:  # once the run is sending, and a little after: answers being written
            target = sim.stats().requests + rng.randint(2, 12)
            wait_until(lambda: sim.stats().requests >= target or proc.poll() is not None,
                       "the run to send")
            time.sleep(rng.uniform(0.0, 0.3))
        killed = proc.poll() is None
        if killed:
            proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    return proc.returncode, killed


def test_kill_9_at_random_points_then_rerun_until_done(tmp_path: Path, cli: Cli,
                                                      simulator: Callable[..., SimulatorThread]
                                                      ) -> None:
    rng = random.Random(SEED)
    sim = simulator(latency="uniform:0.05,0.3", seed=SEED,
                    faults={"500": 0.08, "drop": 0.05, "malformed": 0.04, "429-bare": 0.04})
    ids = write_job(tmp_path)
    run = ("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    never_again: dict[str, int] = {}  # key -> its request count when its work survived a kill
    kills = 0

    for _ in range(KILLS):
        code, killed = run_and_kill(cli, run, sim, rng)
        kills += killed
        if code == 0:
            break  # finished before the kill landed
        # The dead run's last requests reach the end of their latency at the simulator.
        wait_until(lambda: sim.stats().in_flight == 0, "the simulator to go idle")
        stats = sim.stats()
        for key, count in never_again.items():
            assert stats.by_key[key] == count, "a task done before a kill was sent again"
        for key in done_after_the_kill(tmp_path, ids) - set(never_again):
            never_again[key] = stats.by_key[key]

    for _ in range(3):  # the rest: retries may run out on an unlucky streak of faults
        last = cli(*run, timeout=120)
        if last.returncode == 0:
            break
    assert last.returncode == 0, last.stderr
    assert kills >= 4 and len(never_again) >= 3  # the scenario did what it is meant to

    # Each task: one success in the ledger, one whole image, a sidecar that matches.
    assert query(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    rows = query(tmp_path, "SELECT id, state, fingerprint, outputs, sidecar FROM tasks")
    assert sorted(r[0] for r in rows) == ids
    for task_id, state, fingerprint, outputs, sidecar in rows:
        assert state == "succeeded", task_id
        expected = tmp_path / "in" / f"{task_id}.edited.png"
        assert [Path(p) for p in json.loads(outputs)] == [expected]
        assert json.loads(Path(sidecar).read_text())["fingerprint"] == fingerprint
    for path in (tmp_path / "in").iterdir():
        if path.name.startswith(".imgedit-"):
            assert path.name.endswith(".part")  # a write cut short: never an output
        elif path.suffix == ".png" and ".edited" in path.name:
            with Image.open(path) as image:
                image.load()
                assert image.size == (1024, 1024)

    # Nothing done was sent again; what was paid twice is bounded by the kills.
    stats = sim.stats()
    for key, count in never_again.items():
        assert stats.by_key[key] == count
    keys = {idempotency_key(task_id, fp) for task_id, _, fp, _, _ in rows}
    assert set(stats.succeeded_by_key) == keys
    wasted = sum(stats.succeeded_by_key.values()) - TASKS
    assert wasted <= kills * CONCURRENCY
