"""Each route's request and answer, through the client against the simulator's relay, and
the route decoders on hostile bodies (no network for those)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from pipeline.config.settings import Provider, Secret
from pipeline.errors import BadResponse, RouteUnfit, StatusError
from pipeline.gateway.client import Gateway
from pipeline.gateway.routes import chat, gemini, images
from pipeline.gateway.routes.base import origin
from pipeline.simulator.app import SimulatorOptions, running_simulator
from pipeline.task import Location, Task
from tests.conftest import TEST_KEY, tiny_image


def task(tmp_path: Path, model: str, *names: str, route: str = "images", **fields: Any) -> Task:
    paths = tuple(tiny_image(tmp_path / n) for n in names)
    return Task(id="t", images=paths, prompt="Recolor it navy", where=Location(tmp_path, 1),
                root=tmp_path, fields={"model": model, **fields}, route=route)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, Any]]:
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY)) as sim, \
            aiohttp.ClientSession() as session:
        provider = Provider("sim", sim.base_url, Secret(TEST_KEY), None)
        yield Gateway(session, provider, 10), sim


@pytest.mark.parametrize("route", ["chat", "gemini"])
async def test_nano_banana_edits_over_chat_and_gemini(tmp_path: Path, gateway, route: str) -> None:
    client, sim = gateway
    answer = await client.edit(task(tmp_path, "gemini-2.5-flash-image", "a.png", "b.jpg",
                                    route=route), "k")
    assert answer.route == route and answer.formats == ["png"]
    assert Image.open(BytesIO(answer.images[0])).size == (1024, 1024)
    last = sim.gateway.last
    assert last["route"] == route
    # Both inputs arrived as images, typed by their bytes (b.jpg really is a JPEG).
    assert [f["content_type"] for f in last["files"]] == ["image/png", "image/jpeg"]


async def test_the_images_route_says_it_cannot_serve_nano_banana(tmp_path: Path,
                                                                  gateway) -> None:
    client, _ = gateway
    with pytest.raises(StatusError) as caught:
        await client.edit(task(tmp_path, "gemini-2.5-flash-image", "a.png"), "k")
    assert (caught.value.status, caught.value.code) == (500, "convert_request_failed")


async def test_a_part_is_named_for_its_real_format(tmp_path: Path, gateway) -> None:
    # A PNG saved as .jpg: the relay would type it from the name, so the name follows the bytes.
    client, sim = gateway
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (16, 16)).save(path, "PNG")
    shot = Task(id="t", images=(path,), prompt="navy", where=Location(tmp_path, 1),
                root=tmp_path, fields={"model": "gpt-image-1"})
    await client.edit(shot, "k")
    assert sim.gateway.last["files"][0]["filename"] == "photo.png"
    assert sim.gateway.last["files"][0]["content_type"] == "image/png"


@pytest.mark.parametrize("side", [16, 1100])  # sent as one body; streamed from disk
async def test_a_newline_in_a_file_name_is_edited_not_fatal(tmp_path: Path, gateway,
                                                            side: int) -> None:
    """Linux allows it; aiohttp's form refused it and the whole run died with a traceback."""
    client, sim = gateway
    path = tmp_path / "sku\n12\r\nX-Evil: 1.jpg"
    Image.effect_noise((side, side), 90).convert("RGB").save(path, "PNG")
    shot = Task(id="t", images=(path,), prompt="navy", where=Location(tmp_path, 1),
                root=tmp_path, fields={"model": "gpt-image-1"})
    answer = await client.edit(shot, "k")
    assert answer.formats == ["png"]
    sent = sim.gateway.last["files"][0]
    assert (sent["filename"], sent["bytes"]) == ("sku_12__X-Evil: 1.png", path.stat().st_size)


def test_gemini_lives_beside_v1() -> None:
    assert origin("https://api.wenwen-ai.com/v1") == "https://api.wenwen-ai.com"
    assert origin("http://127.0.0.1:9/v1/") == "http://127.0.0.1:9"


def png_b64() -> str:
    out = BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


MAX = 1024 * 1024  # bytes an answer may hold in these tests


def shot(tmp_path: Path) -> Task:
    return Task(id="t", images=(), prompt="p", where=Location(tmp_path, 1), root=tmp_path,
                fields={"model": "m"})


@pytest.mark.parametrize("body", [
    {"choices": [{"message": {"content": "here"}}]},
    {"candidates": []},
    {"object": "chat.completion"},
    {"code": 10000, "data": {"binary_data_base64": ["x"]}},  # jimeng's own shape
    {"data": "not a list"},
])
def test_a_foreign_200_on_images_is_route_unfit(tmp_path: Path, body: Any) -> None:
    with pytest.raises(RouteUnfit):
        images.decode(body, shot(tmp_path), MAX)


def test_chat_reads_markdown_parts_and_images(tmp_path: Path) -> None:
    data = png_b64()
    for message in ({"content": f"Done! ![image](data:image/png;base64,{data})"},
                    {"content": [{"type": "image_url",
                                  "image_url": {"url": f"data:image/png;base64,{data}"}}]},
                    {"content": "", "images": [{"image_url": {"url": f"data:image/png;base64,"
                                                                    f"{data}"}}]}):
        decoded = chat.decode({"choices": [{"message": message}]}, shot(tmp_path), MAX)
        assert decoded.sources == [f"data:image/png;base64,{data}"]  # checked by the client


@pytest.mark.parametrize(("body", "error"), [
    ({"choices": [{"message": {"content": "I cannot edit people."}}]}, BadResponse),
    ({"choices": "no"}, RouteUnfit),
    ({"data": [{"b64_json": "x"}]}, RouteUnfit),
    ({"choices": [None, 3, {"message": None}]}, BadResponse),
])
def test_chat_refuses_what_holds_no_image(tmp_path: Path, body: Any, error: type) -> None:
    with pytest.raises(error):
        chat.decode(body, shot(tmp_path), MAX)


def test_gemini_reads_inline_data_and_reports_a_block(tmp_path: Path) -> None:
    data = png_b64()
    body = {"candidates": [{"content": {"parts": [{"text": "ok"},
                                                  {"inlineData": {"mimeType": "image/png",
                                                                  "data": data}}]}}]}
    assert gemini.decode(body, shot(tmp_path), MAX).sources == [base64.b64decode(data)]
    with pytest.raises(StatusError) as caught:
        gemini.decode({"promptFeedback": {"blockReason": "SAFETY"}}, shot(tmp_path), MAX)
    assert caught.value.code == "prompt_blocked"
    with pytest.raises(BadResponse):
        gemini.decode({"candidates": [{"content": {"parts": [{"text": "no"}]}}]},
                      shot(tmp_path), MAX)
    with pytest.raises(RouteUnfit):
        gemini.decode({"data": []}, shot(tmp_path), MAX)


async def test_a_chat_shaped_answer_on_images_is_kept_and_marked(tmp_path: Path) -> None:
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY, gemini_images="chat")) as sim, \
            aiohttp.ClientSession() as session:
        client = Gateway(session, Provider("sim", sim.base_url, Secret(TEST_KEY), None), 10)
        answer = await client.edit(task(tmp_path, "gemini-2.5-flash-image", "a.png"), "k")
    assert answer.misrouted and answer.route == "images" and answer.formats == ["png"]
