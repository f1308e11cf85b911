"""The workers' queue is filled many tasks per turn of the event loop, in order, once each."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from pipeline.run.feed import BURST, feed


async def test_items_arrive_in_order_once_each_through_a_small_queue() -> None:
    send, receive = anyio.create_memory_object_stream[int](4)
    got: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(feed, range(100), send, lambda: False)
        async with receive:
            async for item in receive:
                got.append(item)
    assert got == list(range(100))


async def test_a_queue_with_room_is_filled_in_few_turns_of_the_loop() -> None:
    """One turn per item capped a busy run at one task per turn; here a turn per BURST."""
    items = 8 * BURST
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
        await feed(range(items), send, lambda: False)
        done.set()
    assert turns <= items // BURST + 1, turns  # with `await send(item)` each: ~items
    with receive:
        assert [receive.receive_nowait() for _ in range(items)] == list(range(items))


async def test_nothing_more_is_handed_out_once_stopped() -> None:
    send, receive = anyio.create_memory_object_stream[int](100)
    handed: list[int] = []

    def items():  # type: ignore[no-untyped-def]
        for n in range(100):
            handed.append(n)
            yield n

    await feed(items(), send, lambda: len(handed) > 10)
    with receive:
        assert [receive.receive_nowait() for _ in range(10)] == list(range(10))
        assert receive.statistics().current_buffer_used == 0
