"""What one answer costs: from its usage when the model prices tokens, else the estimate.

Shared by the live scheduler and batch collection (which halves it). It never
sends anything and never records a cost (the ledger does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.config.models import Models
from pipeline.task import Task


def pricer(models: Models) -> Callable[[Task, Mapping[str, Any] | None], float]:
    """USD for one answer: from its usage when the model prices tokens, else the estimate
    (also for a paid answer we could not use). Never NaN or negative: runs.cost sums it."""
    def price(task: Task, usage: Mapping[str, Any] | None) -> float:
        from_usage = models.cost_from_usage(task.model, usage) if usage else None
        if from_usage is None or not math.isfinite(from_usage) or from_usage < 0:
            return models.estimate(task)
        return from_usage

    return price
