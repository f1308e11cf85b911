"""Which tasks go into a provider batch, and at what price: light enough for `validate`.

Batch mode takes a task when it is on (`run --batch`, or `batch: true` under
`limits`), the provider has the Batch API (`batch: true` in providers.yaml) and
the model can batch (`batch: true` in models.yaml). OpenAI bills batch lines at
half the live price. This module loads no network code: the plan, the
estimate and the runner use it before anything is sent (run/batch.py sends).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from pipeline.config.models import Models
from pipeline.config.settings import Provider, Settings
from pipeline.ledger.batches import Batches
from pipeline.ledger.plan import Found, Plan, Selection, select, walk
from pipeline.ledger.store import Ledger
from pipeline.task import Task

PRICE_FACTOR = 0.5  # OpenAI's Batch API bills half the live price


def takes(task: Task, models: Models, provider: Provider, settings: Settings) -> bool:
    """Does this task go into a batch: batch mode on, and both provider and model can?"""
    spec = models.get(task.model)
    return settings.batch and provider.batch and bool(spec and spec.batch)


def estimator(models: Models, provider: Provider, settings: Settings,
              selection: Selection | None = None,
              known: Callable[[Path], tuple[int, int] | None] | None = None
              ) -> Callable[[Task], float]:
    """A task's estimated price: half the list price when it goes into a batch.
    `known`: input sizes the caller has already (the check pass's); others read."""
    if selection is not None:
        settings = settings_for(settings, selection)

    def estimate(task: Task) -> float:
        factor = PRICE_FACTOR if takes(task, models, provider, settings) else 1.0
        return models.estimate(task, known) * factor

    return estimate


def touches_batches(settings: Settings, ledger: Ledger, wait: bool) -> bool:
    """Does this run touch provider batches? Batch mode is on, --wait asks, or some are
    open. Otherwise batch mode's network code (run/batch.py) is never loaded."""
    return settings.batch or wait or bool(Batches(ledger).open())


def settings_for(settings: Settings, selection: Selection) -> Settings:
    """A redo of rejected results goes live: it keeps the rejected files aside as it
    writes, and its --prompt-suffix is applied on the way to the live route."""
    return dataclasses.replace(settings, batch=False) if selection.redo_rejected else settings


class Taker(Protocol):
    def takes(self, task: Task) -> bool: ...

    def estimate(self, task: Task) -> float: ...


def to_batch(tasks: Iterable[Task], ledger: Ledger, selection: Selection, models: Models,
             plan: Plan, batcher: Taker, endpoint: str) -> Iterator[tuple[Task, str]]:
    """The tasks to send that can go in a batch, counted into the run's plan."""
    walked = walk(tasks, ledger, found=Found.SKIP, endpoint=endpoint)
    return select((w for w in walked if batcher.takes(w[0])), selection, models, plan,
                  batcher.estimate)
