"""Cooldown and concurrency AIMD with a clock the tests move: nothing sleeps.
The pacer and the learning throttle are in test_throttle.py."""

from __future__ import annotations

import anyio
import pytest

from pipeline.config.settings import parse_rate
from pipeline.gateway.limits import AdaptiveConcurrency, Cooldown


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_parse_rate() -> None:
    assert parse_rate("30/min") == 0.5
    assert parse_rate("2/s") == 2.0
    assert parse_rate("120/h") == pytest.approx(1 / 30)
    for bad in ("fast", "0/s", "10 per minute", "-1/s"):
        with pytest.raises(ValueError, match="like '30/min'"):
            parse_rate(bad)


async def test_cooldown_holds_every_waiter_until_it_ends() -> None:
    clock = FakeClock()
    cooldown = Cooldown(clock=clock, sleep=clock.sleep)
    cooldown.extend(5)
    cooldown.extend(2)  # a shorter one never shortens it
    assert cooldown.remaining() == 5
    await cooldown.wait()
    assert clock.now == 1005.0
    assert cooldown.remaining() == 0


async def test_adaptive_concurrency_halves_and_climbs_back() -> None:
    aimd = AdaptiveConcurrency(8, window=4)
    aimd.on_overload()
    assert int(aimd.limit) == 4
    aimd.on_overload()
    aimd.on_overload()
    aimd.on_overload()
    assert aimd.limit == 1.0  # never below one
    for _ in range(4 * 20):
        aimd.on_success()
    assert aimd.limit == 8  # never above the ceiling


async def test_adaptive_concurrency_bounds_in_flight() -> None:
    aimd = AdaptiveConcurrency(3)
    peak = 0
    release = anyio.Event()

    async def worker() -> None:
        nonlocal peak
        async with aimd:
            peak = max(peak, aimd.in_flight)
            await release.wait()

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        assert aimd.in_flight == 3
        release.set()
    assert peak == 3
    assert aimd.in_flight == 0
