"""An input that disappears while its run goes on (a catalog sync, a person tidying up)
fails its own task with a reason, never the run: through the real CLI and simulator.

The check pass proves every input before anything is sent; this is what happens after.
One input goes while the first request is at the gateway: its task was already planned
(the walk for sending had its fingerprint, or had not reached it yet, which the run must
survive too) and its request is built later from the file, which is gone.
"""

from __future__ import annotations

from tests.conftest import Cli, wait_until
from tests.run.test_failures import Simulator, background, numbered, query, write_job


def test_an_input_removed_mid_run_fails_its_task_and_the_rest_succeed(
        tmp_path, cli: Cli, simulator: Simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(latency="0.1")
    write_job(tmp_path, numbered(20), concurrency=1)
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url, "--json") as run:
        wait_until(lambda: sim.stats().requests >= 1, "the first request")
        for gone in ("t03", "t19"):  # queued behind the first; not walked yet
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
