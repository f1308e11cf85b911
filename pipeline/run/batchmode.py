"""Which tasks go into a provider batch, and at what price: light enough for `validate`.

Batch mode takes a task when it is on (`run --batch`, or `batch: true` under
`limits`), the provider has the Batch API (`batch: true` in providers.yaml) and
the model can batch (`batch: true` in models.yaml). OpenAI bills batch lines at
half the live price. This module loads no network code: the plan and the
estimate use it before anything is sent (run/batch.py does the sending).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config.models import Models
from pipeline.config.settings import Provider, Settings
from pipeline.task import Task

PRICE_FACTOR = 0.5  # OpenAI's Batch API bills half the live price


def takes(task: Task, models: Models, provider: Provider, settings: Settings) -> bool:
    """Does this task go into a batch: batch mode on, and both provider and model can?"""
    spec = models.get(task.model)
    return settings.batch and provider.batch and bool(spec and spec.batch)


def estimator(models: Models, provider: Provider,
              settings: Settings) -> Callable[[Task], float]:
    """A task's estimated price: half the list price when it goes into a batch."""
    def estimate(task: Task) -> float:
        factor = PRICE_FACTOR if takes(task, models, provider, settings) else 1.0
        return models.estimate(task) * factor

    return estimate
