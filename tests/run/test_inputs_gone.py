"""An input that disappears while its run goes on (a catalog sync, a person tidying up)
fails its own task with a reason, never the run: through the real CLI and simulator.

The check pass proves every input before anything is sent; this is what happens after.
One input goes while the first request is at the gateway: its task was already planned
(the walk for sending had its fingerprint, or had not reached it yet, which the run must
survive too) and its request is built later from the file, which is gone. In batch mode
the task is left out of the batch and waits for the next run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import Cli, wait_until
from tests.run.batchsim import Sim, cli_for, job, outputs, standalone, states
from tests.run.test_failures import Simulator, background, numbered, query, write_job


def test_an_input_removed_mid_run_fails_its_task_and_the_rest_succeed(
        tmp_path, cli: Cli, simulator: Simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(latency="0.1")
    write_job(tmp_path, numbered(20), concurrency=1)
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url, "--json") as run:
        wait_until(lambda: sim.stats().requests >= 1, "the first request")
        for gone in ("t03", "t19"):  # likely queued already; surely not walked yet
            (tmp_path / "in" / f"{gone}.png").unlink()
        out, err = run.communicate(timeout=120)
    assert run.returncode == 1, (out, err)  # some failed
    assert "Traceback" not in err, err
    rows = {r["id"]: r for r in query(tmp_path, "SELECT * FROM tasks")}
    failed = {i for i, r in rows.items() if r["state"] == "failed"}
    assert failed == {"t03", "t19"}
    for gone in failed:
        assert rows[gone]["error_type"] == "prepare"
        assert "cannot read an input for the request" in rows[gone]["reason"]
        assert "No such file" in rows[gone]["reason"]
        assert not rows[gone]["terminal"]  # a later run tries again, once the file is back
    assert sum(r["state"] == "succeeded" for r in rows.values()) == 18
    assert sim.stats().requests == 18  # nothing was sent for the two


@pytest.fixture
def batch_sim() -> Iterator[Sim]:
    yield from standalone()


@pytest.mark.slow
def test_in_batch_mode_a_removed_input_leaves_its_task_for_the_next_run(
        cli: Cli, batch_sim: Sim, tmp_path: Path) -> None:
    """The first image is large, so it is uploaded as a file (the simulator holds that
    upload while a later input goes); the others go inline in the batch's lines."""
    ids = job(tmp_path, 4)
    noise = Image.frombytes("RGB", (1400, 1400), random.Random(3).randbytes(1400 * 1400 * 3))
    noise.save(tmp_path / "in" / "t00.png")
    batch_sim.hold("files.create")
    run = cli_for(cli, batch_sim).popen("run", "job.yaml", "--json", "--wait")
    try:
        wait_until(lambda: batch_sim.held("files.create") or run.poll() is not None,
                   "the large image's upload")
        (tmp_path / "in" / "t02.png").unlink()
    finally:
        batch_sim.release()
    out, err = run.communicate(timeout=120)
    assert "Traceback" not in err, err
    summary = json.loads(out)
    assert any("task t02: not submitted (" in note and "No such file" in note
               for note in summary["batch"]["notes"]), summary["batch"]
    assert set(outputs(tmp_path, ids)) == {"t00", "t01", "t03"}
    assert states(tmp_path).get("t02") is None  # no row: a new task to the next run
