"""A run against the relay's limit (a sliding window, bare 429s) that nobody told us:
the scheduler hands each 429 to the throttle, which slows the pace, so every task
succeeds with a few refusals, not hundreds. Counted in requests, never timed."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Cli
from tests.run.test_failures import numbered, write_job

TASKS, LIMIT, CONCURRENCY = 40, 20, 4


def test_an_unknown_limit_is_learnt_from_bare_429s(tmp_path: Path, cli: Cli, simulator) -> None:
    sim = simulator(rate_limit=f"{LIMIT}/s")  # the relay's window: no Retry-After, no body
    write_job(tmp_path, numbered(TASKS), concurrency=CONCURRENCY)  # rate: unlimited
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--retries", "3")
    stats = sim.stats()
    assert code == 0, summary
    assert summary["succeeded"] == TASKS
    # The first burst fills the window; the requests already on the wire are refused with
    # it; from then on the pace holds under the window but for a rare probe above it.
    # Without the back-off every worker retries at once: hundreds of 429s, tasks failed.
    assert stats.rejected_429 <= CONCURRENCY + 4, stats
    assert stats.requests == TASKS + stats.rejected_429


def test_requests_in_flight_at_the_gateway_never_exceed_the_concurrency(
        tmp_path: Path, cli: Cli, simulator) -> None:
    """The slot is taken once the body is built and given back once the answer is read:
    the gateway sees the concurrency asked for, never more, and all of it."""
    sim = simulator(latency=0.05)
    write_job(tmp_path, numbered(TASKS), concurrency=CONCURRENCY)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0, summary
    assert sim.stats().max_in_flight == CONCURRENCY
