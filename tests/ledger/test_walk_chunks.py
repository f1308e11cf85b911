"""The plan's walk asks the ledger a chunk of tasks at a time: small first chunks (a run's
first request waits for few look-ups), growing to CHUNK, every task once and in order."""

from __future__ import annotations

from pipeline.ledger import plan


def test_chunks_start_small_and_grow_to_the_chunk_size() -> None:
    items = list(range(2000))
    chunks = list(plan._chunks(items, plan.CHUNK))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == [16, 32, 64, 128, 256, 500, 500, 500, 4]
    assert [x for c in chunks for x in c] == items


def test_a_small_chunk_size_is_never_exceeded() -> None:
    assert [len(c) for c in plan._chunks(list(range(7)), 3)] == [3, 3, 1]  # type: ignore[arg-type]
