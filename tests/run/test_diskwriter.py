"""The disk threads: one while the disk is quick, more (up to `most`) while it is slow."""

from __future__ import annotations

import functools
import threading

import pytest

from pipeline.run.diskwriter import SLOW, DiskWriter


async def test_quick_jobs_keep_one_thread() -> None:
    async with DiskWriter(most=4) as disk:
        names = [await disk.run(lambda: threading.current_thread().name) for _ in range(50)]
        assert disk.threads == 1
    assert set(names) == {"imgedit-disk-0"}


@pytest.mark.parametrize("most", [2, 3])
async def test_slow_jobs_bring_more_threads_up_to_most(most: int) -> None:
    # Each job moves the clock on by twice SLOW, like an fsync on a slow disk: once the
    # average is above SLOW, each job adds a thread, up to `most`.
    now = [0.0]

    def slow(n: int) -> int:
        now[0] += SLOW * 2
        return n

    async with DiskWriter(most=most, clock=lambda: now[0]) as disk:
        assert [await disk.run(functools.partial(slow, n)) for n in range(30)] == list(
            range(30))
        assert disk.threads == most


async def test_one_slow_job_among_quick_ones_adds_no_thread() -> None:
    now = [0.0]

    def took(seconds: float) -> None:
        now[0] += seconds

    async with DiskWriter(most=4, clock=lambda: now[0]) as disk:
        await disk.run(functools.partial(took, SLOW * 3))  # a spike: the average 0.3 SLOW
        for _ in range(30):
            await disk.run(functools.partial(took, 0.0))
        assert disk.threads == 1


async def test_a_job_s_error_is_raised_to_its_caller_and_the_thread_goes_on() -> None:
    def refused() -> None:
        raise OSError(30, "Read-only file system")

    async with DiskWriter() as disk:
        with pytest.raises(OSError, match="Read-only"):
            await disk.run(refused)
        assert await disk.run(lambda: "written") == "written"
