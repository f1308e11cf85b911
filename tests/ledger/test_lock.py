"""The run lock, held by a real second process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import LockHeld
from pipeline.ledger.lock import RunLock, lock_path

# Takes the lock, says so, and holds it until stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from pipeline.ledger.lock import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def hold_in_another_process(ledger: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ledger)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "locked\n"
    return child


def test_lock_file_sits_beside_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "job.ledger.sqlite"
    assert lock_path(ledger) == tmp_path / ".job.ledger.sqlite.lock"
    with RunLock(ledger) as lock:
        assert lock.held
        assert lock.path.read_text() == f"{os.getpid()}\n"
    assert not lock.held
    assert lock.path.read_text() == ""  # unlocked, pid cleared, file left in place


def test_a_second_run_in_the_same_process_is_refused(tmp_path: Path) -> None:
    ledger = tmp_path / "job.ledger.sqlite"
    with RunLock(ledger), pytest.raises(LockHeld):
        RunLock(ledger).acquire()
    with RunLock(ledger):  # released: free again
        pass


def test_another_process_holding_the_lock_refuses_us(tmp_path: Path) -> None:
    ledger = tmp_path / "job.ledger.sqlite"
    manifest = tmp_path / "catalog.yaml"
    with hold_in_another_process(ledger) as child:
        with pytest.raises(LockHeld) as refused:
            RunLock(ledger, manifest=manifest).acquire()
        message = str(refused.value)
        assert f"another imgedit run of {manifest} is in progress (pid {child.pid})" in message
        assert "wait for it or stop it" in message
        assert refused.value.exit_code == 75
        child.communicate("")  # let it finish normally
    with RunLock(ledger, manifest=manifest):
        pass


def test_kill_9_of_the_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    ledger = tmp_path / "job.ledger.sqlite"
    with hold_in_another_process(ledger) as child:
        with pytest.raises(LockHeld):
            RunLock(ledger).acquire()
        child.kill()  # SIGKILL: no cleanup code runs in the holder
        child.wait()
    assert lock_path(ledger).read_text().strip() == str(child.pid)  # its pid is still written
    with RunLock(ledger) as lock:
        assert lock.held


def test_removing_the_ledger_files_leaves_the_lock_of_a_live_run(tmp_path: Path) -> None:
    """`rm job.ledger.sqlite*` while a run holds the lock: a second run is still refused."""
    ledger = tmp_path / "job.ledger.sqlite"
    ledger.write_bytes(b"")
    Path(f"{ledger}-wal").write_bytes(b"")
    with hold_in_another_process(ledger) as child:
        for path in tmp_path.glob("job.ledger.sqlite*"):  # what the shell's glob removes
            path.unlink()
        with pytest.raises(LockHeld):
            RunLock(ledger).acquire()
        child.communicate("")
