"""Chaos: at least 30 random SIGKILLs of runs over a glob manifest whose outputs sit
beside its inputs, against the simulator with faults, then runs to completion.

The wedge of issue 11 (an image written, its sidecar not, the task `submitted`) made
the glob take our own output for a new input and every later run exit 2. Here no run
may exit 2; each task ends with one success; every output decodes; no temp file is
left; the ledger's integrity is ok. How many answers were billed twice is printed
(the simulator counts 200s per Idempotency-Key): killing a run between an answer and
its write costs that answer, never more.
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

import pytest
from PIL import Image

from pipeline.simulator.app import SimulatorThread
from tests.conftest import Cli, tiny_image, wait_until, write_manifest

pytestmark = pytest.mark.slow

TASKS = 160
KILLS = 32
SEED = int(os.environ.get("IMGEDIT_CHAOS_SEED", "1101"))


def test_random_kills_over_a_glob_with_outputs_beside_inputs(
        tmp_path: Path, cli: Cli, simulator: Callable[..., SimulatorThread]) -> None:
    rng = random.Random(SEED)
    sim = simulator(latency="uniform:0.02,0.2", seed=SEED,
                    faults={"500": 0.06, "drop": 0.04, "malformed": 0.03, "429-bare": 0.03})
    for i in range(TASKS):
        tiny_image(tmp_path / "catalog" / f"c{i:03d}.png", (9 * i, 100, 200 - 5 * i))
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
        limits: {rate: unlimited, concurrency: 3}
        tasks:
          - glob: "catalog/*.png"
            prompt: Put the product on a pure white background
        """)
    run = ("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    kills = exits_2 = runs = 0
    while kills < KILLS:
        proc = cli.popen(*run)
        runs += 1
        if rng.random() < 0.3:  # anywhere: start-up, the check pass, planning
            time.sleep(rng.uniform(0.0, 0.8))
        else:  # once it sends: answers being written, sidecars, ledger commits
            target = sim.stats().requests + rng.randint(1, 4)
            wait_until(lambda p=proc, t=target: sim.stats().requests >= t
                       or p.poll() is not None, "the run to send")
            time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        _, err = proc.communicate()
        exits_2 += proc.returncode == 2
        assert proc.returncode != 2, err
        if proc.returncode == 0:
            break  # the catalog finished before enough kills: reported below
        wait_until(lambda: sim.stats().in_flight == 0, "the simulator to go idle")
    assert kills >= 30, f"only {kills} kills landed before the catalog was done"

    for _ in range(5):  # to completion; retries may run out on a streak of faults
        last = cli(*run, timeout=120)
        runs += 1
        assert last.returncode != 2, last.stderr
        if last.returncode == 0:
            break
    assert last.returncode == 0, last.stderr

    with closing(sqlite3.connect(tmp_path / "job.ledger.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute("SELECT id, state, outputs, sidecar, fingerprint FROM tasks").fetchall()
    assert sorted(r[0] for r in rows) == [f"catalog/c{i:03d}.png" for i in range(TASKS)]
    for task_id, state, outputs, sidecar, fingerprint in rows:
        assert state == "succeeded", task_id
        (output,) = json.loads(outputs)
        with Image.open(output) as image:
            image.load()
        assert json.loads(Path(sidecar).read_text())["fingerprint"] == fingerprint
    names = os.listdir(tmp_path / "catalog")
    assert not [n for n in names if n.startswith(".imgedit-")]
    assert len(names) == 3 * TASKS  # inputs, outputs, sidecars: nothing else
    billed = sim.stats().succeeded_by_key
    twice = sum(count - 1 for count in billed.values() if count > 1)
    # A kill costs at most the answers in flight or being saved then (3 on the wire, 3
    # more workers saving): never a task done before the kill.
    assert twice <= kills * 6
    print(f"\nchaos: {kills} kills over {runs} runs, {TASKS} tasks, {sum(billed.values())} "
          f"answers billed, {twice} billed twice, {exits_2} runs exited 2")
