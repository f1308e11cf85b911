"""Where answers are checked: in place only for a small PNG while the process is busy,
else in a worker thread; either way the same check refuses the same damage."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from PIL import Image

from pipeline.errors import BadResponse
from pipeline.gateway.checking import (
    AT_ONCE,
    BUSY,
    IN_PLACE_BYTES,
    WINDOW,
    Checking,
    cheap_to_check,
)
from pipeline.gateway.client import Gateway
from pipeline.simulator.app import SimulatorOptions, running_simulator
from tests.conftest import TEST_KEY, tiny_image
from tests.gateway.hostile import encoded, png
from tests.gateway.test_client import provider, task


def flat_png() -> bytes:  # what an edit on a plain background can come back as: 16 KB
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def noisy_png() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((600, 600), 80).convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_only_a_small_png_of_at_most_a_megapixel_is_cheap_to_check() -> None:
    assert cheap_to_check(flat_png()) and cheap_to_check(png())
    assert len(noisy_png()) > IN_PLACE_BYTES and not cheap_to_check(noisy_png())
    assert not cheap_to_check(png((2000, 1000)))  # a few KB, but 2 MP to inflate
    assert not cheap_to_check(encoded("JPEG")) and not cheap_to_check(b"\x89PNG")


class Clocks:
    """The wall clock and the process's CPU clock, moved by hand."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def spend(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy

    def checking(self) -> Checking:
        checking = Checking(clock=lambda: self.wall, cpu=lambda: self.cpu)
        checking.measure()  # the first window opens
        return checking


def test_busy_is_the_cpu_share_of_each_whole_window() -> None:
    clocks = Clocks()
    checking = clocks.checking()
    assert checking.busy == 0.0  # nothing known yet: worker threads
    clocks.spend(WINDOW / 2, busy=0.9)
    checking.measure()
    assert checking.busy == 0.0  # the window is not over
    clocks.spend(WINDOW / 2, busy=0.9)
    checking.measure()
    assert checking.busy == pytest.approx(0.9)
    clocks.spend(WINDOW * 3, busy=0.2)
    checking.measure()
    assert checking.busy == pytest.approx(0.2)


def busy_checking() -> Checking:
    clocks = Clocks()
    checking = clocks.checking()
    clocks.spend(WINDOW, busy=1.0)  # measured at the next check: a core kept busy
    return checking


async def hold_the_threads(checking: Checking, held: anyio.Event, release: anyio.Event
                           ) -> None:
    async with anyio.create_task_group() as group:
        for _ in range(AT_ONCE):
            group.start_soon(hold_one, checking, release)
        await anyio.lowlevel.checkpoint()
        held.set()


async def hold_one(checking: Checking, release: anyio.Event) -> None:
    async with checking.limiter:
        await release.wait()


async def test_a_busy_process_checks_a_small_png_in_place_the_rest_in_a_thread() -> None:
    checking = busy_checking()
    held, release = anyio.Event(), anyio.Event()
    results: list[str] = []

    async def check(data: bytes) -> None:
        results.append((await checking.check(data))[1])

    async with anyio.create_task_group() as group:
        group.start_soon(hold_the_threads, checking, held, release)
        await held.wait()  # every worker thread is taken
        with anyio.fail_after(30):  # in a thread, it would wait for ever: fail instead
            assert await checking.check(flat_png()) == (flat_png(), "png")  # in place
        group.start_soon(check, noisy_png())
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert results == []  # waits for a worker thread
        release.set()
    assert results == ["png"]


@pytest.mark.parametrize("busy", [True, False])
async def test_in_place_or_not_a_cut_png_fails_the_same_way(busy: bool) -> None:
    checking = busy_checking() if busy else Checking()
    for whole in (flat_png(), noisy_png()):
        with pytest.raises(BadResponse, match="png image is corrupt"):
            await checking.check(whole[:-40])


async def test_a_run_with_time_to_spare_gets_its_answers_checked_in_threads(
        tmp_path: Path) -> None:
    # Waiting on a gateway that takes its time, the process is far from busy: the real
    # clocks, measured over real answers.
    jpeg = tiny_image(tmp_path / "shirt.jpg")
    options = SimulatorOptions(api_key=TEST_KEY, latency=WINDOW * 2)
    async with aiohttp.ClientSession() as session, running_simulator(options) as sim:
        gateway = Gateway(session, provider(sim.base_url), 10)
        for n in range(3):
            await gateway.edit(task(tmp_path, [jpeg]), f"key-{n}")
    assert 0 < gateway.checking.busy < BUSY
