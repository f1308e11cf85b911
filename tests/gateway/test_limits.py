"""Cooldown and concurrency AIMD with a clock the tests move: nothing sleeps.
The pacer and the learning throttle are in test_throttle.py."""

from __future__ import annotations

import functools

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
        slot = aimd.slot()
        await slot.take()
        peak = max(peak, aimd.in_flight)
        await release.wait()
        slot.give_back()

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        assert aimd.in_flight == 3
        release.set()
    assert peak == 3
    assert aimd.in_flight == 0


async def test_a_slot_given_back_once_answered_lets_the_next_request_go() -> None:
    """The answer's check and save happen after `give_back`: the next request need not wait."""
    aimd = AdaptiveConcurrency(1)
    checking, second_in = anyio.Event(), anyio.Event()

    async def first() -> None:
        slot = aimd.slot()
        await slot.take()
        slot.give_back()
        slot.give_back()  # a second call gives nothing back twice
        checking.set()
        await second_in.wait()  # still "checking its answer" while the other goes

    async def second() -> None:
        await checking.wait()
        slot = aimd.slot()
        await slot.take()
        assert aimd.in_flight == 1
        second_in.set()
        slot.give_back()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(first)
            group.start_soon(second)
    assert aimd.in_flight == 0


async def test_freed_slots_go_in_order_and_a_cancelled_waiter_leaves_the_line() -> None:
    aimd = AdaptiveConcurrency(1)
    order: list[str] = []
    hold = anyio.Event()

    async def holder() -> None:
        slot = aimd.slot()
        await slot.take()
        await hold.wait()
        slot.give_back()

    async def waiter(name: str) -> None:
        slot = aimd.slot()
        await slot.take()
        order.append(name)
        assert aimd.in_flight == 1
        await anyio.sleep(0)  # the next in line must still wait here
        slot.give_back()

    impatient = anyio.CancelScope()

    async def cancelled_waiter() -> None:
        with impatient:
            await waiter("cancelled")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            for start in (functools.partial(waiter, "a"), cancelled_waiter,
                          functools.partial(waiter, "b"), functools.partial(waiter, "c")):
                group.start_soon(start)
                await anyio.wait_all_tasks_blocked()
            impatient.cancel()
            hold.set()
    assert order == ["a", "b", "c"]  # first come, first served; the cancelled one never got in
    assert aimd.in_flight == 0


async def test_a_waiter_cancelled_as_it_is_woken_loses_no_slot() -> None:
    """Whether the cancel lands before it runs or after it got in, the slot is not lost:
    the next waiter gets in, nothing stays promised or held."""
    aimd = AdaptiveConcurrency(1)
    first, woken_then_cancelled = aimd.slot(), anyio.CancelScope()
    await first.take()
    got_in: list[str] = []

    async def wait(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            slot = aimd.slot()
            await slot.take()
            got_in.append(name)
            slot.give_back()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(wait, "woken", woken_then_cancelled)
            await anyio.wait_all_tasks_blocked()
            group.start_soon(wait, "next")
            await anyio.wait_all_tasks_blocked()
            first.give_back()  # wakes "woken"...
            woken_then_cancelled.cancel()  # ...which is cancelled before it runs
    assert got_in[-1:] == ["next"]
    assert aimd.in_flight == 0 and aimd._promised == 0
