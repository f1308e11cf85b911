"""The progress display: a live panel on a terminal, plain lines without one, none when quiet."""

from __future__ import annotations

import functools
import io

import anyio
import pytest

from pipeline.views import progress
from pipeline.views.tally import Tally


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "quiet", "shows"), [
    (Terminal(), False, "succeeded"),  # rich's live panel, imported for a terminal only
    (io.StringIO(), False, "3/10"),  # cron: a plain line
    (io.StringIO(), True, None),  # --quiet: nothing but the summary, later
])
async def test_each_tick_flushes_and_shows_where_the_run_is(
        stream: io.StringIO, quiet: bool, shows: str | None) -> None:
    tally = Tally(total=10)
    tally.succeeded = 3
    flushed = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(progress.show, tally, lambda: 0.0, every=0.01,
                                           quiet=quiet, flush=flushed.set, stream=stream))
        with anyio.fail_after(10):  # a deadline for a broken display, not a timing
            await flushed.wait()
            while shows is not None and shows not in stream.getvalue():
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    if shows is None:
        assert stream.getvalue() == ""
