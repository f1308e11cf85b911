"""Problems of a manifest as check_all reports them: in order, identical ones folded.

Owns folding a problem met again (the same field, line and message in many tasks of
one glob) into one line naming the first task and how many more, and the cap on how
many are shown. It never decides what is a problem.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import Problem
from pipeline.task import Location


class Problems:
    """Problems in order, identical ones folded together, at most `limit` kept."""

    def __init__(self, limit: int):
        self.limit = limit
        self.kept: list[tuple[Problem, str]] = []
        self.more: dict[tuple[Location, str, str], int] = {}  # key -> same problem seen again
        self.hidden = 0

    def __bool__(self) -> bool:
        return bool(self.kept)

    def add(self, problem: Problem, label: str) -> None:
        key = (problem.where, problem.field, problem.message)
        if key in self.more:
            self.more[key] += 1
        elif len(self.kept) < self.limit:
            self.more[key] = 0
            self.kept.append((problem, label))
        else:
            self.hidden += 1

    def result(self, manifest: Path) -> list[Problem]:
        out = []
        for problem, label in self.kept:
            more = self.more[(problem.where, problem.field, problem.message)]
            note = f"{label} and {more} more" if label and more else label
            message = f"{problem.message} ({note})" if note else problem.message
            out.append(Problem(problem.where, problem.field, message))
        if self.hidden:
            out.append(Problem(Location(manifest), "tasks", f"{self.hidden} more problems not "
                               "shown: fix these and validate again"))
        return out
