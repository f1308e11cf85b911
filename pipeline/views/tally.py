"""Live counts of one run, shared by the scheduler (which writes them) and the
progress display and summary (which read them). Plain data, no I/O."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass
class Tally:
    total: int = 0  # tasks this run will attempt
    succeeded: int = 0
    failed: int = 0
    unknown: int = 0  # ended with no answer: may have been billed
    retrying: int = 0  # tasks waiting between attempts now
    in_flight: int = 0  # requests on the wire now
    requests: int = 0
    possible_double_charges: int = 0  # paid-for answers after one that may have been billed
    spent: float = 0.0
    batched: int = 0  # tasks this run put into provider batches (answered later)
    saved: float = 0.0  # what batch prices saved on the answers kept in this run
    simulated: bool = False  # a rehearsal: `spent` is what it would have cost
    retries_by_cause: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # first (id, reason) pairs
    outputs: list[str] = field(default_factory=list)  # first output paths written
    started: float = field(default_factory=time.monotonic)
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=600))

    MAX_FAILURES_KEPT = 20

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.unknown

    def sent(self) -> None:
        self.requests += 1
        self._recent.append(time.monotonic())

    def wrote(self, paths: list[str]) -> None:
        room = self.MAX_FAILURES_KEPT - len(self.outputs)
        self.outputs.extend(paths[: max(0, room)])

    def failure(self, task_id: str, reason: str) -> None:
        if len(self.failures) < self.MAX_FAILURES_KEPT:
            self.failures.append((task_id, reason))

    def request_rate(self, window: float = 60.0) -> float:
        """Requests per second over the last `window` seconds."""
        now = time.monotonic()
        recent = [t for t in self._recent if now - t <= window]
        span = min(window, now - self.started)
        return len(recent) / span if span > 0 else 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        rate = self.done / self.elapsed() if self.elapsed() > 0 else 0
        return (self.total - self.done) / rate if rate > 0 else None
