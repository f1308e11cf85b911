"""The run lock: one `imgedit run` per manifest at a time.

Owns the lock file beside the ledger (`.<ledger name>.lock`: hidden, so that
`rm job.ledger.sqlite*` removes the ledger but not the lock a live run holds,
and a second run started after such an rm still waits its turn), the pid written in it,
and the set of locks this process holds (`holds`, which Ledger.open asks). It
must never wait for the lock (a second run fails at once with LockHeld, exit 75)
and never delete the lock file (see `release`).

The lock is `flock(LOCK_EX | LOCK_NB)`: the kernel drops it when the holder's
last descriptor closes, which includes the process dying. So a kill -9 never
leaves a stale lock, and there is nothing to clean up by hand.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from pipeline.errors import InputError, LockHeld

# Lock files this process holds, so Ledger.open knows whether it speaks for the run.
_held_here: set[Path] = set()


def lock_path(ledger: Path) -> Path:
    """`.<ledger name>.lock`, beside the ledger. Given a path that already ends in .lock,
    itself."""
    return ledger if ledger.suffix == ".lock" else ledger.with_name(f".{ledger.name}.lock")


def holds(ledger: Path) -> bool:
    """Whether this process holds the run lock of `ledger`."""
    return lock_path(ledger).resolve() in _held_here


class RunLock:
    """`with RunLock(ledger, manifest=m):` holds the manifest's lock or raises LockHeld.

    `ledger` is the ledger's path (the lock file is `.<ledger name>.lock`) or the lock file's.
    """

    def __init__(self, ledger: Path, *, manifest: Path | None = None):
        self.path = lock_path(ledger)
        self.manifest = manifest
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            # os.open descriptors are not inherited by child processes (PEP 446), so a
            # child cannot keep the lock alive after this process dies.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot create the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeld(self._held_message(holder)) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only for the message a second run prints; the lock is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _held_here.add(self.path.resolve())

    def release(self) -> None:
        """Unlock, leaving the file in place.

        Deleting it would let a run that opened the old file just before the delete
        lock that orphan while a third run locks a new file: two runs at once.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _held_here.discard(self.path.resolve())
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next reader
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _held_message(self, pid: int | None) -> str:
        what = self.manifest if self.manifest is not None else self.path
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        return (
            f"another imgedit run of {what} is in progress ({holder}); wait for it or stop it"
            f" (lock file: {self.path})"
        )


def _read_pid(fd: int) -> int | None:
    # Empty while the holder is between its flock and its pid write: then unknown.
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
