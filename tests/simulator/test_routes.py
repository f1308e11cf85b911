"""The simulator's chat and gemini routes, and what its images route does with models whose
channel is not OpenAI's: as the relay (new-api) answers them, over loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Any

import aiohttp
import pytest
from PIL import Image

from pipeline.simulator.app import SimulatorOptions, running_simulator

KEY = "sk-route-test"
GREEN = (10, 200, 30)


def png_b64(colour: tuple[int, int, int] = GREEN) -> str:
    out = BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


class Relay:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, sim: Any):
        self.base_url, self.session, self.sim = base_url, session, sim

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.post(self.base_url + path, **kwargs) as response:
            return response.status, await response.json(content_type=None)


async def relay(**options: Any) -> AsyncIterator[Relay]:
    async with running_simulator(SimulatorOptions(api_key=KEY, **options)) as sim, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        yield Relay(sim.base_url.removesuffix("/v1"), session, sim)


@pytest.fixture
async def gw() -> AsyncIterator[Relay]:
    async for r in relay():
        yield r


def chat_body(model: str, *images: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "make it navy"}]
    content += [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b}"}}
                for b in images]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def test_chat_answers_a_gemini_edit_as_a_markdown_data_url(gw: Relay) -> None:
    status, body = await gw.post("/v1/chat/completions",
                                 json=chat_body("gemini-2.5-flash-image", png_b64()))
    assert status == 200, body
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("![image](data:image/png;base64,") and content.endswith(")")
    data = base64.b64decode(content.split(",", 1)[1][:-1])
    assert Image.open(BytesIO(data)).size == (1024, 1024)
    assert gw.sim.gateway.last["route"] == "chat"
    assert gw.sim.stats.succeeded == 1


async def test_chat_refuses_an_openai_image_model_as_openai_does(gw: Relay) -> None:
    status, body = await gw.post("/v1/chat/completions", json=chat_body("gpt-image-1", png_b64()))
    assert status == 404
    assert "not a chat model" in body["error"]["message"]


async def test_gemini_route_takes_inline_data_and_answers_inline_data(gw: Relay) -> None:
    request = {"contents": [{"role": "user", "parts": [
        {"text": "make it navy"}, {"inline_data": {"mime_type": "image/png", "data": png_b64()}}]}]}
    status, body = await gw.post("/v1beta/models/gemini-3.1-flash-image:generateContent",
                                 json=request)
    assert status == 200, body
    parts = body["candidates"][0]["content"]["parts"]
    image = next(p["inlineData"] for p in parts if "inlineData" in p)
    assert image["mimeType"] == "image/png"
    assert Image.open(BytesIO(base64.b64decode(image["data"]))).format == "PNG"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v1beta/models/gpt-image-1:generateContent", 500, "convert_request_failed"),
    ("/v1beta/models/no-such-model:generateContent", 503, "model_not_found"),
    ("/v1beta/models/gemini-2.5-flash-image:countTokens", 501, "api_not_implemented"),
])
async def test_gemini_route_refusals_are_the_relays(gw: Relay, path: str, status: int,
                                                    code: str) -> None:
    answer_status, body = await gw.post(path, json={"contents": []})
    assert (answer_status, body["error"]["code"], body["error"]["type"]) == (
        status, code, "new_api_error")


def edit_form(model: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("model", model)
    form.add_field("prompt", "make it navy")
    form.add_field("image", base64.b64decode(png_b64()), filename="a.png")
    return form


async def test_images_route_cannot_convert_a_gemini_edit(gw: Relay) -> None:
    status, body = await gw.post("/v1/images/edits", data=edit_form("gemini-2.5-flash-image"))
    assert status == 500
    assert (body["error"]["type"], body["error"]["code"]) == ("new_api_error",
                                                              "convert_request_failed")
    assert "only imagen models" in body["error"]["message"]


async def test_images_route_answers_a_gemini_edit_chat_shaped_when_told() -> None:
    async for gw in relay(gemini_images="chat"):
        status, body = await gw.post("/v1/images/edits", data=edit_form("gemini-2.5-flash-image"))
        assert status == 200 and "choices" in body and "data" not in body


async def test_images_route_drops_jimengs_input_images(gw: Relay) -> None:
    status, body = await gw.post("/v1/images/edits", data=edit_form("jimeng-4.0"))
    assert status == 200
    assert body["code"] == 10000 and "data" in body and "choices" not in body
    data = base64.b64decode(body["data"]["binary_data_base64"][0])
    # White tinted navy: drawn from the prompt alone, with no trace of the green input.
    centre = Image.open(BytesIO(data)).convert("RGB").getpixel((512, 512))
    white_navy = ((255 + 20) // 2, (255 + 30) // 2, (255 + 90) // 2)
    assert all(abs(a - b) <= 2 for a, b in zip(centre, white_navy, strict=True)), centre
