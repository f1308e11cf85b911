"""The workers' queue: many tasks per turn of the loop while unpaced, one while paced; in
order, once each."""

from __future__ import annotations

import itertools

import anyio
import anyio.lowlevel

from pipeline.run.feed import BURST, feed


async def test_items_arrive_in_order_once_each_through_a_small_queue() -> None:
    send, receive = anyio.create_memory_object_stream[int](4)
    got: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(feed, range(100), send, lambda: False, lambda: True)
        async with receive:
            async for item in receive:
                got.append(item)
    assert got == list(range(100))


async def _turns_to_feed(items: int, eager: bool) -> int:
    """Turns of the loop taken to hand `items` items to a queue with room for them all."""
    send, receive = anyio.create_memory_object_stream[int](items)
    turns = 0
    done = anyio.Event()

    async def count_turns() -> None:
        nonlocal turns
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            turns += 1

    async with anyio.create_task_group() as group:
        group.start_soon(count_turns)
        await anyio.lowlevel.checkpoint()  # the counter is running
        await feed(range(items), send, lambda: False, lambda: eager)
        done.set()
    with receive:
        assert [receive.receive_nowait() for _ in range(items)] == list(range(items))
    return turns


async def test_unpaced_a_queue_with_room_is_filled_in_few_turns_of_the_loop() -> None:
    """One turn per item capped a busy run at one task per turn; here a turn per BURST."""
    items = 8 * BURST
    assert await _turns_to_feed(items, eager=True) <= items // BURST + 1


async def test_paced_each_item_waits_its_own_turn_of_the_loop() -> None:
    """Paced requests must not be held back by a burst of workers waking at once."""
    items = 8 * BURST
    assert await _turns_to_feed(items, eager=False) >= items


async def test_it_switches_to_one_a_turn_as_soon_as_a_rate_is_set() -> None:
    send, receive = anyio.create_memory_object_stream[int](100)
    sent = 0

    def items():  # type: ignore[no-untyped-def]
        nonlocal sent
        for n in range(100):
            sent = n
            yield n

    turns: list[int] = []  # how many items were out at each turn of the loop
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            while sent < 99:
                turns.append(sent)
                await anyio.lowlevel.checkpoint()
        group.start_soon(watch)
        await anyio.lowlevel.checkpoint()
        await feed(items(), send, lambda: False, lambda: sent < 50)
    receive.close()
    steps = [b - a for a, b in itertools.pairwise(turns)]
    assert max(steps[:2]) >= BURST - 1  # eager at first
    assert max(steps[-20:]) <= 1  # one a turn once paced


async def test_nothing_more_is_handed_out_once_stopped() -> None:
    send, receive = anyio.create_memory_object_stream[int](100)
    handed: list[int] = []

    def items():  # type: ignore[no-untyped-def]
        for n in range(100):
            handed.append(n)
            yield n

    await feed(items(), send, lambda: len(handed) > 10, lambda: True)
    with receive:
        assert [receive.receive_nowait() for _ in range(10)] == list(range(10))
        assert receive.statistics().current_buffer_used == 0
