"""Which tasks this run sends, and why: new, changed, done, failed, unknown.

Compares each task's fingerprint with the ledger. Streams: tasks come in and
go out one at a time, so a 100k-task manifest never sits in memory. It never
sends anything and never writes the ledger, except to adopt a success the ledger
does not know of — a crashed run's, or one from a lost ledger — when its outputs
and sidecar are on disk with a matching fingerprint.
"""

from __future__ import annotations

import enum
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.models import Models
from pipeline.ledger.fingerprint import fingerprint
from pipeline.ledger.ours import output_slots, still_written, written
from pipeline.ledger.reviews import Reviews
from pipeline.ledger.sidecar import owner, read_sidecar, sidecar_paths
from pipeline.ledger.store import Ledger, TaskState
from pipeline.task import State, Task


class Category(enum.StrEnum):
    NEW = "new"  # never run
    CHANGED = "changed"  # ran before, but its inputs, prompt or fields changed since
    DONE = "done"  # succeeded with this fingerprint here; its outputs are what it wrote
    REHEARSED = "rehearsed"  # succeeded, but from another endpoint (the simulator): sent
    RETRY = "retry"  # failed with a retryable error, or interrupted: runs again
    FAILED = "failed"  # failed terminally: runs again only with --retry-failed
    UNKNOWN = "unknown"  # no answer came; may have been billed
    BATCHED = "batched"  # in a provider batch: never sent again before it is collected
    REJECTED = "rejected"  # done, but a reviewer rejected it: runs again with --redo-rejected


@dataclass(frozen=True)
class Selection:
    """The run options that pick tasks (see `imgedit run --help`)."""

    only: frozenset[str] = frozenset()
    only_failed: bool = False
    retry_failed: bool = False
    force: bool = False
    retry_unknown: bool = True
    limit: int | None = None
    redo_rejected: bool = False

    def wants(self, task: Task, category: Category) -> bool:
        if (self.only and task.id not in self.only) or category is Category.BATCHED:
            return False
        if self.redo_rejected:  # just the rejected results, as --only-failed is just failures
            return category is Category.REJECTED
        failed = category in (Category.FAILED, Category.RETRY, Category.UNKNOWN)
        if self.only_failed:
            return failed and (category is not Category.UNKNOWN or self.retry_unknown)
        if self.force:
            return True
        if category in (Category.DONE, Category.REJECTED):
            return False
        if category is Category.FAILED:
            return self.retry_failed
        if category is Category.UNKNOWN:
            return self.retry_unknown
        return True


@dataclass
class Plan:
    """Counts and estimated cost of what a run would send."""

    categories: Counter[str] = field(default_factory=Counter)
    to_send: int = 0
    estimate: float = 0.0
    # Failed or unknown tasks the flags leave unsent (not those --only leaves out): the
    # run must not exit 0 while they lack outputs.
    held: int = 0
    # Tasks --only or --limit did not pick: neither done nor held, just not this run's.
    left_out: int = 0
    # Output folder -> rough bytes this run will write there (checked before sending).
    room: Counter[str] = field(default_factory=Counter)


# A rough size of one output: a quarter byte per pixel, what a photo's JPEG takes
# (its PNG takes several times more), plus its share of the sidecar.
BYTES_PER_PIXEL = 0.25
SIDECAR_BYTES = 4096


def output_bytes(task: Task) -> int:
    width, _, height = str(task.fields.get("size", "")).partition("x")
    pixels = int(width) * int(height) if width.isdigit() and height.isdigit() else 1024 * 1024
    return task.n * int(pixels * BYTES_PER_PIXEL) + SIDECAR_BYTES

def categorise(task: Task, fp: str, record: TaskState | None,
               endpoint: str | None = None) -> Category:
    if record is None:
        return Category.NEW
    old_fp, state, terminal, outputs, written, done_at = record
    if state == State.BATCHED:  # even if changed since: its batch may still answer it
        return Category.BATCHED
    if old_fp != fp:
        return Category.CHANGED
    if state == State.SUCCEEDED:
        # A ledger from before endpoints were recorded (done_at None) is taken at its word.
        if endpoint is not None and done_at is not None and done_at != endpoint:
            return Category.REHEARSED
        if written is not None:
            return Category.DONE if still_written(written) else Category.CHANGED
        return Category.DONE if all(Path(p).exists() for p in outputs) else Category.CHANGED
    if state == State.FAILED:
        return Category.FAILED if terminal else Category.RETRY
    if state in (State.UNKNOWN, State.SUBMITTED):
        return Category.UNKNOWN
    return Category.NEW


class Found(enum.Enum):
    """What `walk` does with finished work the ledger does not know of (see `_orphan`)."""

    ADOPT = "adopt"  # record it as a success: a run's plan
    COUNT = "count"  # count it as done, write nothing: validate and --dry-run
    SKIP = "skip"  # do not look: a run's send pass, after its plan adopted them all


def walk(tasks: Iterable[Task], ledger: Ledger, *, found: Found = Found.ADOPT,
         endpoint: str | None = None,
         clashes: list[str] | None = None) -> Iterator[tuple[Task, str, Category]]:
    """Each task with its fingerprint and category, for the gateway at `endpoint`
    ("provider@host"; None: any). Files in the way of a task to send that are not
    ours go to `clashes`, when given, one message each."""
    rejected = Reviews(ledger).rejected()  # a few ids: people review, not machines
    for chunk in _chunks(tasks, CHUNK):
        states = ledger.states([task.id for task in chunk])
        ledger.look_up(path for task in chunk for path in (*task.images, task.mask) if path)
        for task in chunk:
            record = states.get(task.id)
            try:
                fp = fingerprint(task, ledger)
            except OSError:  # an input gone since the check pass: judged as the ledger saw
                fp = record[0] if record else ""  # it; sent, the request fails the task
            category = categorise(task, fp, record, endpoint)
            there = None  # the files at this task's output paths, once looked for
            if found is not Found.SKIP and category in (Category.UNKNOWN, Category.NEW):
                there = _there(task)
                if there and _found(task, fp, ledger, found, endpoint):
                    category = Category.DONE
            if category is Category.DONE and task.id in rejected:
                category = Category.REJECTED
            if clashes is not None and category is not Category.DONE:
                clashes += _clashes(task, ledger, _there(task) if there is None else there)
            yield task, fp, category


CHUNK = 500  # tasks looked up in the ledger at once: one query, a small dict
FIRST_CHUNK = 16  # the first chunks are small and grow: a run's first request waits for few


def _chunks(tasks: Iterable[Task], size: int) -> Iterator[list[Task]]:
    chunk: list[Task] = []
    goal = min(FIRST_CHUNK, size)
    for task in tasks:
        chunk.append(task)
        if len(chunk) == goal:
            yield chunk
            chunk = []
            goal = min(goal * 2, size)
    if chunk:
        yield chunk


def _found(task: Task, fp: str, ledger: Ledger, found: Found, endpoint: str | None) -> bool:
    """Outputs the ledger does not know of: a run killed between writing them and recording
    the success (unknown), or a ledger lost, deleted or left on another machine (new).
    Their sidecar proves the work was paid for; other tasks cannot have any. True when
    this exact work is on disk (recorded as done when `found` says ADOPT)."""
    orphan = _orphan(task, fp, endpoint)
    if orphan and found is Found.ADOPT:
        _adopt(task, fp, *orphan, ledger)
    return orphan is not None


def _orphan(task: Task, fp: str,
            endpoint: str | None) -> tuple[dict[str, Any], list[Path]] | None:
    """The sidecar and outputs of this exact work, from this endpoint, when all on disk."""
    sidecar = read_sidecar(task)
    if not sidecar or sidecar.get("fingerprint") != fp or owner(task) is not None:
        return None
    if endpoint is not None and sidecar.get("endpoint", endpoint) != endpoint:
        return None  # a rehearsal's result: the real gateway has not made it
    # Looked for where this task's template puts them now, not at the paths the sidecar
    # recorded: a catalog copied to another folder or machine is still the same work.
    formats = [Path(p).suffix[1:] for p in sidecar.get("outputs", [])]
    outputs = [task.output_path(index, ext) for index, ext in enumerate(formats)]
    return (sidecar, outputs) if outputs and all(p.exists() for p in outputs) else None


def adopt_if_on_disk(task: Task, fp: str, ledger: Ledger, endpoint: str | None) -> bool:
    """Record this exact work as done when its outputs and sidecar (from `endpoint`) are on
    disk (a run killed between writing them and recording the success); True when it did."""
    orphan = _orphan(task, fp, endpoint)
    if orphan:
        _adopt(task, fp, *orphan, ledger)
    return orphan is not None


def _adopt(task: Task, fp: str, sidecar: dict[str, Any], outputs: list[Path],
           ledger: Ledger) -> None:
    """Record a success found on disk instead of paying for it again."""
    path = task.sidecar_path(outputs[0].suffix[1:])
    files = [written(p, p.read_bytes(), os.stat(p)) for p in (*outputs, path)]
    ledger.mark_succeeded(task.id, fp, outputs, path,
                          usage=sidecar.get("usage"), cost=_number(sidecar.get("cost")),
                          request_id=sidecar.get("request_id"), written=files,
                          endpoint=sidecar.get("endpoint"))


def _number(value: Any) -> float:
    try:
        cost = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return cost if math.isfinite(cost) and cost >= 0 else 0.0


def _there(task: Task) -> list[str]:
    """The files (or links) already at the paths `task` may write, in slot order: none for
    a new task, so neither a sidecar to read nor a clash to look into."""
    return [path for stem, suffixes in output_slots(task).items()
            for path in (stem + suffix for suffix in sorted(suffixes))
            if os.path.lexists(path)]


def _clashes(task: Task, ledger: Ledger, there: list[str]) -> list[str]:
    """A file at a path `task` would write (`there`: those on disk) that another manifest
    (or a person) put there: never overwritten, never taken as this task's result. At most
    one message."""
    for path in there:
        why = owner(task)  # a sidecar naming another task or manifest
        claim = ledger.claimed_by(path)
        if why is None and claim != task.id and (claim is not None or not _sidecar(task)):
            why = (f"the ledger says task {claim!r} wrote it" if claim else
                   "imgedit has no record of writing it")
        if why is not None:
            return [f"{path} already exists and is not the result of task {task.id!r}"
                    f" ({why}): move it away, or change the output template"]
    return []


def _sidecar(task: Task) -> bool:
    return any(os.path.lexists(path) for path in sidecar_paths(task))


def select(walked: Iterable[tuple[Task, str, Category]], selection: Selection,
           models: Models, plan: Plan,
           estimate: Callable[[Task], float] | None = None) -> Iterator[tuple[Task, str]]:
    """The (task, fingerprint) pairs to send, counting everything into `plan`.
    `estimate`: a task's price (batch mode's is lower); the model's list price if None."""
    estimate = estimate or models.estimate
    for task, fp, category in walked:
        plan.categories[category.value] += 1
        if not selection.wants(task, category):
            if selection.only and task.id not in selection.only:
                plan.left_out += 1
            elif category in (Category.FAILED, Category.UNKNOWN):
                plan.held += 1
            continue
        if selection.limit is not None and plan.to_send >= selection.limit:
            plan.left_out += 1
            continue
        plan.to_send += 1
        plan.estimate += estimate(task)
        # A dead run's temp file belongs to a task it had not finished: that task is sent
        # again, so its folder is among these, and cleaned before the first request.
        plan.room[os.path.dirname(task.output_path(0, "png"))] += output_bytes(task)
        yield task, fp
