"""Where answers are checked: in place only for a small PNG from a gateway that answers
quickly, else in a worker thread; either way the same check refuses the same damage."""

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
    IN_PLACE_BYTES,
    QUICK_ANSWER,
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


def test_the_gateway_is_quick_once_its_answers_average_under_the_limit() -> None:
    checking = Checking()
    assert not checking.quick  # nothing known yet: worker threads
    for _ in range(5):
        checking.answered_in(QUICK_ANSWER / 5)
    assert checking.quick
    checking.answered_in(30.0)  # one slow answer moves the average past the limit
    assert not checking.quick


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


async def test_a_quick_gateways_small_png_is_checked_in_place_the_rest_in_a_thread() -> None:
    checking = Checking()
    for _ in range(3):
        checking.answered_in(0.0)
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


@pytest.mark.parametrize("quick", [True, False])
async def test_in_place_or_not_a_cut_png_fails_the_same_way(quick: bool) -> None:
    checking = Checking()
    checking.answered_in(0.0 if quick else 1.0)
    for whole in (flat_png(), noisy_png()):
        with pytest.raises(BadResponse, match="png image is corrupt"):
            await checking.check(whole[:-40])


async def test_a_gateway_that_takes_its_time_gets_its_answers_checked_in_threads(
        tmp_path: Path) -> None:
    jpeg = tiny_image(tmp_path / "shirt.jpg")
    options = SimulatorOptions(api_key=TEST_KEY, latency=QUICK_ANSWER * 4)
    async with aiohttp.ClientSession() as session, running_simulator(options) as sim:
        gateway = Gateway(session, provider(sim.base_url), 10)
        for n in range(3):
            await gateway.edit(task(tmp_path, [jpeg]), f"key-{n}")
    assert gateway.checking.answer_time is not None
    assert gateway.checking.answer_time >= QUICK_ANSWER * 4 and not gateway.checking.quick
