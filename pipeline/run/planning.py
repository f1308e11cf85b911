"""Check, then plan: every task of a manifest checked, and what a run would send, in one
pass over the manifest.

Owns the order between the two: each good task is planned as it passes the check,
so a glob is walked and its tasks are built once per run, not twice; and when the
check pass ends with problems, they are raised (ManifestError, exit 2) before anything
acts on the plan. A run that touches provider batches checks every task first and
plans in a second pass, since batches that ended are collected in between.
It never sends anything and never writes a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.models import Models
from pipeline.config.settings import Provider, Settings
from pipeline.errors import ConfigError, InputError
from pipeline.ledger.plan import Found, Plan, Selection, select, walk
from pipeline.ledger.store import Ledger
from pipeline.manifest import load as manifest_mod
from pipeline.manifest.preflight import Preflight, ValidationReport
from pipeline.run import batchmode
from pipeline.task import Task


@dataclass
class Job:
    """Everything resolved before anything is sent."""

    manifest: manifest_mod.Manifest
    models: Models
    settings: Settings
    provider: Provider
    ledger_path: Path


def check(job: Job, ledger: Ledger, *, price: bool = True) -> Preflight:
    """The check pass, not yet run: iterate it (or plan from it) to check every file, id,
    output and model limit. From here on no glob takes a file of ours (known to this
    ledger) for an input. `price`: the report's cost of every task (a run's plan prices
    only the tasks it sends, so a run passes False)."""
    job.manifest = dataclasses.replace(job.manifest, ours=ledger.is_ours)
    return Preflight(job.manifest, job.models, known=ledger, price=price)


def report(job: Job, checking: Preflight) -> ValidationReport:
    """What the finished check found (the pass is run out first if it was not); raises
    ManifestError with all problems, ConfigError when batch mode has no Batch API."""
    if checking.report is None:
        with few_collections():
            for _ in checking:
                pass
    assert checking.report is not None
    if job.settings.batch and not job.provider.batch:
        raise ConfigError(f"provider {job.provider.name} has no Batch API (`batch: true` in "
                          "providers.yaml): run without --batch, or pick a provider that has one")
    return checking.report


def plan(job: Job, ledger: Ledger, selection: Selection, checking: Preflight, *,
         found: Found = Found.ADOPT) -> Plan:
    """What a run would send, each task planned as the check passes it (or, when the
    check has run already, from a second pass over the manifest); raises the check's
    problems first, then InputError naming files in the way that are not ours."""
    tasks: Iterable[Task] = checking if checking.report is None else job.manifest.tasks()
    # Each input's size for the estimate: the ledger row the check just read or wrote (the
    # rows of the chunk being checked and of the one before are at hand), no header read.
    with few_collections():
        return plan_only(job, ledger, selection, found=found, tasks=tasks,
                         estimate=batchmode.estimator(job.models, job.provider, job.settings,
                                                      selection, ledger.stored_dimensions))


def plan_only(job: Job, ledger: Ledger, selection: Selection, *,
              found: Found = Found.ADOPT,
              estimate: Callable[[Task], float] | None = None,
              tasks: Iterable[Task] | None = None) -> Plan:
    """What a run would send; raises InputError naming files in the way that are not ours.
    `estimate`: a task's price (batch mode's is lower); the model's list price if None.
    `tasks`: the manifest's when None."""
    planned = Plan()
    clashes: list[str] = []
    walked = walk(job.manifest.tasks() if tasks is None else tasks, ledger, found=found,
                  endpoint=job.provider.endpoint, clashes=clashes)
    for _ in select(walked, selection, job.models, planned, estimate):
        pass
    if clashes:
        raise InputError("files in the way of this run's outputs (nothing was sent):\n  "
                         + "\n  ".join(clashes[:20])
                         + (f"\n  ... and {len(clashes) - 20} more" if len(clashes) > 20 else ""))
    return planned


_FEW = 10_000  # new objects between two runs of the collector's youngest generation


@contextlib.contextmanager
def few_collections() -> Iterator[None]:
    """The pass over a manifest with the cyclic garbage collector mostly asleep. Its objects
    die by reference counting as each task passes, yet at the default threshold (700 new
    objects) the collector ran 1,300 times over a 100k re-run, 8% of its time; at 10,000
    it runs once or twice. Memory stays flat: few of these objects are in cycles."""
    threshold = gc.get_threshold()
    gc.set_threshold(_FEW, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)

