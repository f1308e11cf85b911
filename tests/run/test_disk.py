"""A paid answer is kept (issue 11 item 4): a folder that cannot be written is refused
before anything is sent; one that turns read-only or full while answers are in flight
sends them to the spool beside the ledger, and the next run writes them with no request.

Real read-only and full file systems: a read-only bind mount and a small tmpfs, which
need root (CI runs as root); skipped otherwise. chmod would not stop root.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from pipeline.ledger.fingerprint import idempotency_key
from pipeline.simulator.app import SimulatorThread
from tests.conftest import Cli, tiny_image, wait_until, write_manifest

Simulator = Callable[..., SimulatorThread]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "out"
    folder.mkdir()
    yield folder
    while subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
        pass  # every layer mounted there


def job(folder: Path, count: int) -> list[str]:
    for i in range(count):
        tiny_image(folder / "in" / f"t{i}.png", (40 * i, 90, 90))
    write_manifest(folder, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024,
                    output: "out/{stem}.edited.{ext}"}
        limits: {rate: unlimited, concurrency: 1}
        tasks:
          - glob: "in/*.png"
            prompt: Put it on white
        """)
    return [f"in/t{i}.png" for i in range(count)]


def tasks(folder: Path) -> dict[str, tuple[str, str, str]]:
    with closing(sqlite3.connect(folder / "job.ledger.sqlite")) as db:
        rows = db.execute("SELECT id, state, fingerprint, COALESCE(error_type, '') FROM tasks")
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_a_read_only_folder_is_refused_before_anything_is_sent(
        tmp_path: Path, out: Path, cli: Cli, sim: SimulatorThread) -> None:
    job(tmp_path, 2)
    mount("--bind", str(out), str(out))
    mount("-o", "remount,ro,bind", str(out))
    for command in (("validate", "job.yaml"), ("run", "job.yaml", "--base-url", sim.base_url)):
        done = cli(*command)
        assert done.returncode == 2, done.stderr
        assert f"{out}: cannot write there (Read-only file system)" in done.stderr
    assert sim.stats().requests == 0


def test_a_full_folder_is_refused_before_anything_is_sent(
        tmp_path: Path, out: Path, cli: Cli, sim: SimulatorThread) -> None:
    job(tmp_path, 8)  # about 2 MB by the rough estimate, in a 1 MB file system
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out))
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 2, done.stderr
    assert f"{out}: " in done.stderr and "needed for this run's outputs" in done.stderr
    assert sim.stats().requests == 0


def fill(folder: Path) -> Path:
    """Write until the file system says it is full."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow  # mounts a filesystem and runs the CLI three times: a long scenario
@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_an_answer_paid_while_the_folder_fails_is_kept_and_written_next_run(
        tmp_path: Path, out: Path, cli: Cli, simulator: Simulator, fault: str) -> None:
    ids = job(tmp_path, 3)
    if fault == "read-only":
        mount("--bind", str(out), str(out))
    else:
        mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(out))
    # The answer takes 2 s: time enough to break the folder once its request is out.
    sim = simulator(latency=2.0)
    run = cli.popen("run", "job.yaml", "--base-url", sim.base_url, "--json")
    wait_until(lambda: sim.stats().requests >= 1 or run.poll() is not None, "the first request")
    if fault == "read-only":
        mount("-o", "remount,ro,bind", str(out))
        filler = None
    else:
        filler = fill(out)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert "paid results are kept beside the ledger" in summary["stopped"]
    # Each answer paid before launching stopped (the next request may already have left
    # while the first was being written) is kept; the rest were never sent.
    paid = summary["requests"]
    assert (summary["succeeded"], summary["failed"], summary["not_started"]) == (
        0, paid, 3 - paid)
    assert 1 <= paid < 3
    kept = {task_id: fp for task_id, (state, fp, error) in tasks(tmp_path).items()
            if (state, error) == ("failed", "not_written")}
    assert len(kept) == paid
    spool = tmp_path / "job.ledger.sqlite.spool"
    assert len(list(spool.iterdir())) == paid

    # The folder is fixed; the next run writes the kept answer without a new request.
    if filler is not None:
        filler.unlink()
    else:
        mount("-o", "remount,rw,bind", str(out))
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0, summary
    assert (summary["sent"], summary["requests"]) == (3 - paid, 3 - paid)  # none again
    for task_id, fingerprint in kept.items():
        assert sim.stats().by_key[idempotency_key(task_id, fingerprint)] == 1
    assert not spool.exists()
    assert {state for state, _, _ in tasks(tmp_path).values()} == {"succeeded"}
    for task_id in ids:
        with Image.open(out / f"{Path(task_id).stem}.edited.png") as image:
            image.load()
    assert not [p for p in out.iterdir() if p.name.startswith(".imgedit-")]
