"""Start-up: how long the real CLI takes before it does any work, and to validate a catalog.

`imgedit --help` (the console script, as a user types it) and `imgedit
validate` of a fresh 1,000-file catalog (no ledger yet, so every file is read,
hashed and decoded), each timed as a whole process, median of ROUNDS (run.py
byte-compiles the package first, as any installed copy is after its first run).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from catalog import make_catalog
from process import PY, measure
from scenarios import ClientFailed, Outcome, Row, verdict

ROUNDS = 5
HELP_TARGET, VALIDATE_TARGET = 0.25, 0.6


def imgedit() -> list[str]:
    script = Path(PY).parent / "imgedit"
    return [str(script)] if script.exists() else [PY, "-m", "pipeline"]


def timed(cmd: list[str], cwd: Path) -> list[float]:
    measure(cmd, cwd=cwd)  # warm: the page cache, and the first run's own costs
    walls = []
    for _ in range(ROUNDS):
        m = measure(cmd, cwd=cwd)
        if m.returncode != 0:
            raise ClientFailed(f"{' '.join(cmd)} exited {m.returncode}:\n{m.tail()}")
        walls.append(m.wall_s)
    return walls


def startup(work: Path, files: int = 1000) -> Outcome:
    out = Outcome()
    manifest = make_catalog(work / "startup", files)
    help_s = timed([*imgedit(), "--help"], work)
    validate_s = timed([*imgedit(), "validate", str(manifest)], manifest.parent)
    for label, walls, target in (("imgedit --help", help_s, HELP_TARGET),
                                 (f"imgedit validate, {files:,} new files", validate_s,
                                  VALIDATE_TARGET)):
        median = statistics.median(walls)
        out.rows.append(Row("start-up", f"{label} (median of {ROUNDS})", f"{median:.2f} s", "-",
                            f"<= {target:g} s", verdict(median <= target)))
        out.notes.append(f"start-up {label}: " + ", ".join(f"{w:.2f}" for w in walls) + " s")
    return out
