"""Requests that leave together share one commit; none leaves before its row is committed."""

from __future__ import annotations

import anyio
import pytest

from pipeline.run.commits import GroupCommit


class Rows:
    """Rows written and rows committed, like the ledger's open transaction."""

    def __init__(self, fail: bool = False) -> None:
        self.written: list[str] = []
        self.committed: list[str] = []
        self.commits = 0
        self.fail = fail

    def commit(self) -> None:
        self.commits += 1
        if self.fail:
            raise OSError("disk I/O error")
        self.committed = list(self.written)


async def test_requests_ready_in_one_turn_share_a_commit_and_each_row_is_in_it() -> None:
    rows = Rows()
    group = GroupCommit(rows.commit)
    left: list[str] = []

    async def depart(name: str) -> None:
        rows.written.append(name)
        await group.committed()
        assert name in rows.committed  # never leaves before its row is committed
        left.append(name)

    async with anyio.create_task_group() as tasks:
        for name in "abcde":
            tasks.start_soon(depart, name)
    assert sorted(left) == list("abcde")
    assert rows.commits == 1

    await depart("f")  # alone: a commit of its own
    assert rows.commits == 2


async def test_a_failed_commit_fails_every_request_waiting_on_it() -> None:
    rows = Rows(fail=True)
    group = GroupCommit(rows.commit)
    failed: list[str] = []

    async def depart(name: str) -> None:
        rows.written.append(name)
        try:
            await group.committed()
        except OSError:
            failed.append(name)

    async with anyio.create_task_group() as tasks:
        for name in "abc":
            tasks.start_soon(depart, name)
    assert sorted(failed) == ["a", "b", "c"]
    assert rows.commits == 1
    with pytest.raises(OSError):  # the next round tries again
        await group.committed()
    assert rows.commits == 2
