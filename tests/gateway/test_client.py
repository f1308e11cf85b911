"""The wire format and answer decoding, checked at the real simulator on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.config.settings import Provider, Secret
from pipeline.errors import BadResponse, ConnectError, OutcomeUnknown, StatusError
from pipeline.gateway.client import Gateway
from pipeline.simulator.app import SimulatorOptions, running_simulator
from pipeline.task import Location, Task
from tests.conftest import TEST_KEY, tiny_image, transparent_mask


def provider(base_url: str) -> Provider:
    return Provider(name="sim", base_url=base_url, api_key=Secret(TEST_KEY), api_key_env=None)


def task(tmp_path: Path, images: list[Path], mask: Path | None = None, **fields: Any) -> Task:
    return Task(id="t1", images=tuple(images), prompt="Recolor it navy", mask=mask,
                where=Location(tmp_path / "m.yaml", 1), root=tmp_path,
                fields={"model": "gpt-image-1", **fields},
                placeholders={"dir": str(tmp_path), "stem": images[0].stem})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_one_image_goes_as_image_with_its_real_content_type(tmp_path: Path, session) -> None:
    jpeg = tiny_image(tmp_path / "shirt.jpg")
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY)) as sim:
        answer = await Gateway(session, provider(sim.base_url), 10).edit(
            task(tmp_path, [jpeg], size="1024x1024"), "key-1")
        last = sim.gateway.last
    assert [f["field"] for f in last["files"]] == ["image"]
    assert last["files"][0]["content_type"] == "image/jpeg"
    assert last["form"]["model"] == "gpt-image-1"
    assert last["form"]["size"] == "1024x1024"
    assert last["headers"]["Idempotency-Key"] == "key-1"
    assert last["headers"]["Authorization"] is True
    assert answer.formats == ["png"]


async def test_several_images_go_as_repeated_image_brackets_plus_mask(tmp_path: Path,
                                                                      session) -> None:
    a = tiny_image(tmp_path / "a.png")
    b = tiny_image(tmp_path / "b.webp", fmt="WEBP")
    mask = transparent_mask(tmp_path / "mask.png")
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY)) as sim:
        await Gateway(session, provider(sim.base_url), 10).edit(
            task(tmp_path, [a, b], mask=mask), "k")
        files = sim.gateway.last["files"]
    assert [(f["field"], f["content_type"]) for f in files] == [
        ("image[]", "image/png"), ("image[]", "image/webp"), ("mask", "image/png")]
    assert "files[]" not in sim.gateway.last["fields"]


async def test_response_format_is_never_sent_to_gpt_image(tmp_path: Path, session) -> None:
    img = tiny_image(tmp_path / "a.png")
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY)) as sim:
        await Gateway(session, provider(sim.base_url), 10).edit(
            task(tmp_path, [img], response_format="b64_json"), "k")
        assert "response_format" not in sim.gateway.last["form"]


@pytest.mark.parametrize("mode", ["b64", "url", "data-url"])
async def test_every_answer_shape_decodes_to_a_verified_image(tmp_path: Path, session,
                                                              mode: str) -> None:
    img = tiny_image(tmp_path / "a.png")
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY, response=mode)) as sim:
        answer = await Gateway(session, provider(sim.base_url), 10).edit(
            task(tmp_path, [img], output_format="webp", n=2), "k")
    assert answer.formats == ["webp", "webp"]
    assert all(data[:4] == b"RIFF" for data in answer.images)


@pytest.mark.parametrize(
    ("fault", "error"),
    [("notimage", BadResponse), ("malformed", BadResponse), ("drop", OutcomeUnknown)])
async def test_broken_answers_raise_the_right_error(tmp_path: Path, session, fault: str,
                                                    error: type[Exception]) -> None:
    img = tiny_image(tmp_path / "a.png")
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY, faults={fault: 1.0})) as sim:
        with pytest.raises(error):
            await Gateway(session, provider(sim.base_url), 10).edit(task(tmp_path, [img]), "k")


async def test_error_answers_carry_status_code_and_server_wait(tmp_path: Path, session) -> None:
    img = tiny_image(tmp_path / "a.png")
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY, faults={"429": 1.0})) as sim:
        with pytest.raises(StatusError) as caught:
            await Gateway(session, provider(sim.base_url), 10).edit(task(tmp_path, [img]), "k")
    assert caught.value.status == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.retry_after == 1.0
    assert caught.value.request_id


async def test_html_error_pages_become_readable_messages(tmp_path: Path, session) -> None:
    img = tiny_image(tmp_path / "a.png")
    options = SimulatorOptions(api_key=TEST_KEY, faults={"html502": 1.0})
    async with running_simulator(options) as sim:
        with pytest.raises(StatusError) as caught:
            await Gateway(session, provider(sim.base_url), 10).edit(task(tmp_path, [img]), "k")
    assert caught.value.status == 502
    assert "<" not in caught.value.message


async def test_slow_answer_past_the_timeout_is_an_unknown_outcome(tmp_path: Path,
                                                                  session) -> None:
    img = tiny_image(tmp_path / "a.png")
    options = SimulatorOptions(api_key=TEST_KEY, faults={"slow": 1.0}, slow_seconds=3)
    async with running_simulator(options) as sim:
        with pytest.raises(OutcomeUnknown):
            await Gateway(session, provider(sim.base_url), 0.2).edit(task(tmp_path, [img]), "k")


async def test_nothing_listening_is_a_connect_error(tmp_path: Path, session) -> None:
    img = tiny_image(tmp_path / "a.png")
    with pytest.raises(ConnectError):
        await Gateway(session, provider("http://127.0.0.1:9/v1"), 5).edit(
            task(tmp_path, [img]), "k")


async def test_a_large_input_is_streamed_whole_and_reopened_per_attempt(tmp_path: Path,
                                                                        session) -> None:
    from PIL import Image

    from pipeline.gateway.client import IN_MEMORY_MAX

    big = tmp_path / "big.png"
    Image.effect_noise((1100, 1100), 90).convert("RGB").save(big)
    assert big.stat().st_size > IN_MEMORY_MAX  # the streamed path, not the in-memory one
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY, fail_first={"502": 1})) as sim:
        gateway = Gateway(session, provider(sim.base_url), 10)
        for _ in range(2):  # a 502, then the same file sent again from the start
            with contextlib.suppress(StatusError):
                await gateway.edit(task(tmp_path, [big]), "k")
            assert sim.gateway.last["files"][0]["bytes"] == big.stat().st_size
        assert sim.stats.succeeded == 1


@pytest.mark.parametrize(("fault", "called"), [("notimage", True), ("drop", False)])
async def test_answered_is_called_once_the_body_is_read_before_the_images_are_checked(
        tmp_path: Path, session, fault: str, called: bool) -> None:
    """The scheduler gives the request's slot back there: an answer being checked holds
    no place at the gateway. A dropped connection never reaches it."""
    img = tiny_image(tmp_path / "a.png")
    calls: list[str] = []
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY, faults={fault: 1.0})) as sim:
        with pytest.raises((BadResponse, OutcomeUnknown)):
            await Gateway(session, provider(sim.base_url), 10).edit(
                task(tmp_path, [img]), "k", answered=lambda: calls.append("answered"))
    assert calls == (["answered"] if called else [])
