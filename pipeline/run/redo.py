"""`run --redo-rejected`: send again what a reviewer rejected, keeping the rejected files.

Before a redone task's new outputs are written, its rejected outputs and their
sidecar are renamed beside them as `<name>.rejected-N.<ext>` (N the first number
free for all of them), so nothing paid for is ever overwritten. `--prompt-suffix`
adds words to the prompt of that one send; the task's fingerprint stays the
manifest's, so a later plain run takes the new result as done.

It never picks which tasks run (plan.py does) and never deletes a file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.ledger.reviews import Reviews
from pipeline.ledger.store import Ledger
from pipeline.task import Task

MAX_KEPT = 10_000  # rejections of one result kept side by side; past that, a clear error


def rejected_files(ledger: Ledger) -> dict[str, list[Path]]:
    """task id → the outputs and sidecar of its rejected result, as the ledger names them."""
    files: dict[str, list[Path]] = {}
    for task_id in Reviews(ledger).rejected():
        record = ledger.get(task_id)
        if record is not None:
            files[task_id] = [*record.outputs, *([record.sidecar] if record.sidecar else [])]
    return files


def kept_name(path: Path, number: int) -> Path:
    """`shirt.edited.png` → `shirt.edited.rejected-1.png`."""
    return path.with_name(f"{path.stem}.rejected-{number}{path.suffix}")


def keep_rejected(files: list[Path]) -> list[Path]:
    """Rename the files that still exist to their `.rejected-N` names; returns the new paths."""
    present = [path for path in files if path.exists()]
    if not present:
        return []
    for number in range(1, MAX_KEPT + 1):
        targets = [kept_name(path, number) for path in present]
        if not any(target.exists() for target in targets):
            break
    else:
        raise OSError(f"{present[0]}: {MAX_KEPT} rejected versions already kept beside it")
    for path, target in zip(present, targets, strict=True):
        os.replace(path, target)  # same folder: a rename, never a copy
    return targets


def with_prompt_suffix(work: Iterable[tuple[Task, str]],
                       suffix: str | None) -> Iterator[tuple[Task, str]]:
    """Each task with `suffix` added to its prompt; its fingerprint unchanged."""
    for task, fp in work:
        if suffix:
            task = dataclasses.replace(task, prompt=f"{task.prompt} {suffix}")
        yield task, fp
