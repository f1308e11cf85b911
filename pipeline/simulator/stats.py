"""What the simulator counts and remembers for tests: per-request counters, and what the
last request carried (never the key itself, only whether one came)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline.simulator.request import Part


@dataclass
class SimulatorStats:
    requests: int = 0  # every edit POST, whatever its route
    succeeded: int = 0  # 200 answers carrying images
    images: int = 0
    rejected_429: int = 0  # every 429 answered: rate limit, 429, 429-bare and quota
    in_flight: int = 0
    max_in_flight: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # fault name -> times injected
    by_key: dict[str, int] = field(default_factory=dict)  # Idempotency-Key -> requests
    succeeded_by_key: dict[str, int] = field(default_factory=dict)
    by_route: dict[str, int] = field(default_factory=dict)  # images / chat / gemini -> requests

    def clear(self) -> None:
        """Zero in place (a test may hold this object); requests still running stay counted."""
        for f in dataclasses.fields(self):
            if f.name != "in_flight":
                setattr(self, f.name, getattr(SimulatorStats(), f.name))
        self.max_in_flight = self.in_flight

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bump(counts: dict[str, int], key: str, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by


def describe(parts: list[Part], request: web.Request) -> dict[str, Any]:
    """What a test may check about the last request; the key itself is never kept."""
    names = ("Content-Type", "Idempotency-Key", "User-Agent")
    return {
        "fields": [p.field for p in parts],
        "files": [{"field": p.field, "filename": p.filename, "content_type": p.content_type,
                   "bytes": len(p.data)} for p in parts if p.filename is not None],
        "form": {p.field: p.data.decode("utf-8", "replace") for p in parts if p.filename is None},
        "headers": {k: request.headers[k] for k in names if k in request.headers}
        | {"Authorization": "Authorization" in request.headers},
    }
