"""The simulator over real HTTP on loopback: parsing, checks, edits, answers, faults, counters."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import CIMultiDictProxy
from PIL import Image, UnidentifiedImageError

from pipeline.simulator.app import (
    MAX_BODY_BYTES,
    SimulatorOptions,
    SimulatorThread,
    prompt_colour,
    running_simulator,
)
from pipeline.simulator.faults import FAULTS
from tests.conftest import readline_within

KEY = "sk-test-not-a-real-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
GREEN, NAVY, WHITE = (10, 200, 30), (20, 30, 90), (255, 255, 255)
REPO = Path(__file__).resolve().parents[2]


def png(colour: tuple[int, ...] = GREEN, size: tuple[int, int] = (64, 64),
        mode: str = "RGB") -> bytes:
    out = BytesIO()
    Image.new(mode, size, colour).save(out, "PNG")
    return out.getvalue()


def left_half_transparent_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    out = BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


def edit_form(images: tuple[bytes, ...] | None = None, field: str = "image",
              content_type: str = "image/png", mask: bytes | None = None,
              **fields: Any) -> aiohttp.FormData:
    """A multipart edit request; a field given as None is left out."""
    form = aiohttp.FormData()
    for name, value in {"model": "gpt-image-1", "prompt": "recolor to navy", **fields}.items():
        if value is not None:
            form.add_field(name, str(value))
    for i, data in enumerate(images if images is not None else (png(),)):
        form.add_field(field, data, filename=f"in{i}.png", content_type=content_type)
    if mask is not None:
        form.add_field("mask", mask, filename="mask.png", content_type="image/png")
    return form


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        return dict(self.json()["error"])

    def picture(self, index: int = 0) -> Image.Image:
        return Image.open(BytesIO(base64.b64decode(self.json()["data"][index]["b64_json"])))


@dataclass
class Gateway:
    sim: Any
    session: aiohttp.ClientSession

    async def edit(self, headers: dict[str, str] | None = None, timeout: float | None = None,
                   base_url: str | None = None, **form: Any) -> Answer:
        url = f"{base_url or self.sim.base_url}/images/edits"
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self.session.post(url, data=edit_form(**form), headers=headers,
                                     timeout=client_timeout) as response:
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str) -> Answer:
        async with self.session.get(self.sim.base_url.removesuffix("/v1") + path) as response:
            return Answer(response.status, response.headers, await response.read())


@asynccontextmanager
async def gateway(**options: Any) -> AsyncIterator[Gateway]:
    async with running_simulator(SimulatorOptions(**{"api_key": KEY, **options})) as sim, \
            aiohttp.ClientSession(headers=AUTH) as session:
        yield Gateway(sim, session)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with gateway() as pair:
        yield pair


def near(pixel: Any, expected: tuple[int, ...], slack: int = 2) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel, expected, strict=True))


def tinted(colour: tuple[int, int, int], by: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple((a + b) // 2 for a, b in zip(colour, by, strict=True))


# --- parsing and editing ---------------------------------------------------------------------


async def test_one_image_in_the_image_field_is_edited_and_answered_as_b64(gw: Gateway) -> None:
    answer = await gw.edit()
    assert answer.status == 200, answer.body
    assert answer.headers["x-request-id"].startswith("req_")
    body = answer.json()
    assert isinstance(body["created"], int)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    picture = answer.picture()
    assert (picture.format, picture.size) == ("PNG", (1024, 1024))
    assert near(picture.getpixel((512, 512)), tinted(GREEN, NAVY))
    last = (await gw.get("/_sim/last")).json()
    assert last["fields"] == ["model", "prompt", "image"]
    assert last["files"] == [{"field": "image", "filename": "in0.png", "content_type": "image/png",
                              "bytes": len(png())}]
    assert last["form"] == {"model": "gpt-image-1", "prompt": "recolor to navy"}


async def test_several_images_in_image_brackets_are_laid_side_by_side(gw: Gateway) -> None:
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    answer = await gw.edit(images=tuple(png(c) for c in colours), field="image[]",
                           prompt="on a white background")
    assert answer.status == 200, answer.body
    picture = answer.picture()
    for i, colour in enumerate(colours):  # three cells of 341 px, each image centred in its own
        assert near(picture.getpixel((170 + 341 * i, 512)), tinted(colour, WHITE))
    assert picture.getpixel((170, 20)) == WHITE  # white canvas above the images, tinted white
    last = (await gw.get("/_sim/last")).json()
    assert [f["field"] for f in last["files"]] == ["image[]"] * 3
    assert [f["filename"] for f in last["files"]] == ["in0.png", "in1.png", "in2.png"]


async def test_files_brackets_from_the_docs_is_not_read(gw: Gateway) -> None:
    answer = await gw.edit(field="files[]")
    assert answer.status == 400
    assert answer.error["code"] == "missing_required_parameter"
    assert answer.error["param"] == "image"


async def test_the_mask_limits_the_edit_to_its_transparent_area(gw: Gateway) -> None:
    answer = await gw.edit(mask=left_half_transparent_mask())
    assert answer.status == 200, answer.body
    picture = answer.picture()
    assert near(picture.getpixel((100, 512)), tinted(GREEN, NAVY))  # transparent: edited
    assert picture.getpixel((900, 512)) == GREEN  # opaque: the original, exactly


@pytest.mark.parametrize(("output_format", "pillow_name"), [("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_output_format_is_really_that_format(gw: Gateway, output_format: str,
                                                   pillow_name: str) -> None:
    answer = await gw.edit(output_format=output_format)
    assert answer.status == 200, answer.body
    assert answer.picture().format == pillow_name
    assert answer.json()["output_format"] == output_format


async def test_a_transparent_background_keeps_an_alpha_channel(gw: Gateway) -> None:
    answer = await gw.edit(images=(png((0, 0, 0, 0), mode="RGBA"),), background="transparent")
    picture = answer.picture()
    assert picture.mode == "RGBA"
    assert picture.getchannel("A").getpixel((512, 512)) == 0


@pytest.mark.parametrize(("size", "expected"), [("1536x1024", (1536, 1024)),
                                                ("1024x1536", (1024, 1536)),
                                                ("auto", (1024, 1024))])
async def test_size_is_honoured(gw: Gateway, size: str, expected: tuple[int, int]) -> None:
    assert (await gw.edit(size=size)).picture().size == expected


async def test_n_answers_that_many_images(gw: Gateway) -> None:
    answer = await gw.edit(n=3, size="256x256")
    assert len(answer.json()["data"]) == 3
    assert gw.sim.stats.images == 3


def test_the_tint_comes_from_the_first_colour_word_else_from_the_prompt() -> None:
    assert prompt_colour("Recolor to navy blue") == NAVY
    assert prompt_colour("白色背景") == WHITE
    assert prompt_colour("make it pop") == prompt_colour("make it pop")
    assert prompt_colour("make it pop") != prompt_colour("make it shine")


# --- answer modes ----------------------------------------------------------------------------


async def test_url_answers_are_fetchable_without_auth() -> None:
    async with gateway(response="url") as gw:
        url = (await gw.edit()).json()["data"][0]["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/files/\w+\.png", url)
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as response:
            assert response.status == 200
            assert response.content_type == "image/png"
            assert Image.open(BytesIO(await response.read())).size == (1024, 1024)
        assert (await gw.get("/files/nosuchtoken.png")).error["code"] == "file_not_found"


async def test_data_url_answers_carry_the_image_inline() -> None:
    async with gateway(response="data-url") as gw:
        url = (await gw.edit(output_format="webp")).json()["data"][0]["url"]
        head, _, data = url.partition(",")
        assert head == "data:image/webp;base64"
        assert Image.open(BytesIO(base64.b64decode(data))).format == "WEBP"


@pytest.mark.parametrize(("model", "response_format", "kind"), [
    ("dall-e-2", None, "http"),
    ("dall-e-2", "b64_json", "b64_json"),
    ("dall-e-2", "url", "http"),
])
async def test_auto_mode_follows_the_model_and_response_format(
    gw: Gateway, model: str, response_format: str | None, kind: str
) -> None:
    answer = await gw.edit(model=model, response_format=response_format, size="512x512")
    item = answer.json()["data"][0]
    assert list(item) == ["b64_json" if kind == "b64_json" else "url"]
    assert kind == "b64_json" or item["url"].startswith(kind)
    assert "usage" not in answer.json()  # only gpt-image models report tokens


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("form", "status", "code", "param"), [
    ({"model": None}, 400, "", ""),  # the relay's distributor: no model, no channel
    ({"model": "dall-e-3"}, 503, "model_not_found", ""),
    ({"prompt": None}, 400, "missing_required_parameter", "prompt"),
    ({"response_format": "b64_json"}, 400, "unknown_parameter", "response_format"),
    ({"images": (b"not a png at all",)}, 400, "invalid_image", "image"),
    ({"images": (png(),) * 17, "field": "image[]"}, 400, "invalid_value", "image"),
    ({"size": "800x600"}, 400, "invalid_value", "size"),
    ({"n": "0"}, 400, "invalid_value", "n"),
    ({"output_format": "gif"}, 400, "invalid_value", "output_format"),
    ({"mask": png(size=(32, 32))}, 400, "invalid_value", "mask"),
])
async def test_invalid_requests_get_the_gateways_error(
    gw: Gateway, form: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    answer = await gw.edit(**form)
    assert answer.status == status, answer.body
    assert answer.headers["x-request-id"].startswith("req_")
    assert set(answer.error) == {"message", "type", "param", "code"}
    assert (answer.error["code"], answer.error["param"]) == (code, param)


@pytest.mark.parametrize(("header", "message"), [
    ("", "Token not provided"),
    ("Bearer", "Invalid token"),  # no `Bearer ` to take off: the word is the token
    ("Bearer sk-another-key", "Invalid token"),
    ("Basic dGVzdA==", "Invalid token"),
    (f"Token {KEY}", "Invalid token"),  # only `Bearer ` is taken off
])
async def test_the_key_is_checked_as_the_relay_does(gw: Gateway, header: str,
                                                    message: str) -> None:
    answer = await gw.edit(headers={"Authorization": header})
    assert answer.status == 401
    assert answer.error["message"].startswith(f"{message} (request id: ")
    assert (answer.error["type"], answer.error["code"], answer.error["param"]) == (
        "new_api_error", "", "")
    assert gw.sim.stats.succeeded == 0


async def test_the_token_is_compared_without_sk_and_after_its_first_dash(gw: Gateway) -> None:
    # middleware/auth.go: `sk-` is dropped and what follows the first `-` picks a channel.
    assert (await gw.edit(headers={"Authorization": "bearer test-7"})).status == 200
    assert (await gw.edit(headers={"Authorization": "Bearer sk-test"})).status == 200


async def test_file_parts_reach_the_upstream_typed_by_their_names_extension(gw: Gateway) -> None:
    # relay/channel/openai/adaptor.go detectImageMimeType: the name decides, not the header.
    form = aiohttp.FormData()
    form.add_field("model", "gpt-image-1")
    form.add_field("prompt", "navy")
    form.add_field("image[]", png(), filename="a.JPG", content_type="image/png")
    form.add_field("image[]", png(), filename="b.webp", content_type="application/octet-stream")
    form.add_field("image[]", png(), filename="c.bin", content_type="image/webp")
    async with gw.session.post(f"{gw.sim.base_url}/images/edits", data=form) as response:
        assert response.status == 200
    types = [f["content_type"] for f in gw.sim.gateway.last["files"]]
    assert types == ["image/jpeg", "image/webp", "image/png"]


async def test_image_wins_over_image_brackets_and_only_the_first_mask_goes(gw: Gateway) -> None:
    form = aiohttp.FormData()
    for name, value in (("model", "gpt-image-1"), ("prompt", "navy"), ("prompt", "red")):
        form.add_field(name, value)
    form.add_field("image[]", png(NAVY), filename="x.png", content_type="image/png")
    form.add_field("image", png(GREEN), filename="y.png", content_type="image/png")
    form.add_field("mask", left_half_transparent_mask(), filename="m1.png")
    form.add_field("mask", png(size=(8, 8)), filename="m2.png")  # ignored: only the first goes
    async with gw.session.post(f"{gw.sim.base_url}/images/edits", data=form) as response:
        body = await response.json()
    assert response.status == 200, body
    picture = Image.open(BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    # One input (image, not image[]), tinted navy (the first prompt): the left half only.
    assert near(picture.getpixel((10, 500)), tinted(GREEN, NAVY))
    assert near(picture.getpixel((1000, 500)), GREEN)


async def test_a_body_announced_over_128_mb_is_a_413_before_it_is_read(gw: Gateway) -> None:
    host, port = gw.sim.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/images/edits HTTP/1.1\r\nHost: {host}\r\n"
                 f"Authorization: Bearer {KEY}\r\n"
                 "Content-Type: multipart/form-data; boundary=b\r\n"
                 f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I)[1])  # type: ignore[index]
    body = json.loads(await reader.readexactly(length))
    writer.close()
    await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 413 ")
    assert MAX_BODY_BYTES == 128 * 1024 * 1024  # common/init.go MAX_REQUEST_BODY_MB
    assert body["error"]["code"] == "read_request_body_failed"
    assert body["error"]["message"].startswith("request body exceeds 128 MB")


async def test_a_chunked_upload_is_cut_off_at_128_mb(gw: Gateway) -> None:
    async def upload() -> AsyncIterator[bytes]:
        yield (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        chunk = bytes(1 << 20)
        for _ in range(MAX_BODY_BYTES // len(chunk) + 1):
            yield chunk

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    async with gw.session.post(f"{gw.sim.base_url}/images/edits", data=upload(),
                               headers=headers) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "read_request_body_failed"


# --- rate limit, latency, faults -------------------------------------------------------------


async def test_asked_to_the_rate_limit_says_when_to_retry() -> None:
    """rate_limit_retry_after: OpenAI's JSON and headers (the relay's 429 is bare: see
    test_ratelimit.py)."""
    async with gateway(rate_limit="2/min", rate_limit_retry_after=True) as gw:
        started = time.monotonic()
        statuses = [(await gw.edit()).status for _ in range(2)]
        third = await gw.edit()
        waited_ms = (time.monotonic() - started) * 1000
        assert statuses == [200, 200]
        assert third.status == 429
        assert third.error["type"] == third.error["code"] == "rate_limit_exceeded"
        # The first request leaves the window after 60 s, less what a loaded machine took
        # for the three requests: bounded by that time, not by a guess of it.
        wait_ms = int(third.headers["retry-after-ms"])
        assert 60_000 - waited_ms - 1 <= wait_ms <= 60_000
        assert int(third.headers["Retry-After"]) == -(-wait_ms // 1000)
        assert gw.sim.stats.rejected_429 == 1


async def until(check: Any, what: str, timeout: float = 30.0) -> None:
    """Wait for a state of the simulator, not for a time."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_latency_is_waited_after_the_upload_and_requests_overlap() -> None:
    async with gateway(latency=600) as gw:
        waiting = [asyncio.create_task(gw.edit(size="256x256")) for _ in range(5)]
        # All five uploaded and held in the upstream's latency at once: they overlap.
        await until(lambda: gw.sim.stats.in_flight == 5, "five requests in flight")
        assert gw.sim.gateway.last["files"]  # the upload was read before the wait
        assert not any(task.done() for task in waiting)  # the latency is being waited
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert gw.sim.stats.max_in_flight == 5 and gw.sim.stats.succeeded == 0


ERROR_FAULTS = [
    ("500", 500, "server_error", None),
    ("502", 502, "server_error", "bad_gateway"),
    ("503", 503, "server_error", "overloaded"),
    ("504", 504, "server_error", "timeout"),
    ("429", 429, "rate_limit_exceeded", "rate_limit_exceeded"),
    ("429-bare", 429, "rate_limit_exceeded", "rate_limit_exceeded"),
    ("quota", 429, "insufficient_quota", "insufficient_quota"),
    ("moderation", 400, "invalid_request_error", "moderation_blocked"),
    ("convert", 500, "new_api_error", "convert_request_failed"),
    ("401", 401, "invalid_request_error", "invalid_api_key"),
    ("sensitive_words_detected", 500, "new_api_error", "sensitive_words_detected"),
    ("model_price_error", 400, "new_api_error", "model_price_error"),
    ("model_not_found", 503, "new_api_error", "model_not_found"),
    ("api_not_implemented", 501, "new_api_error", "api_not_implemented"),
    ("bad_response_body", 500, "openai_error", "bad_response_body"),
    ("insufficient_user_quota", 403, "new_api_error", "insufficient_user_quota"),
]


@pytest.mark.parametrize(("fault", "status", "type_", "code"), ERROR_FAULTS)
async def test_error_faults_answer_the_gateways_json(fault: str, status: int, type_: str,
                                                     code: str | None) -> None:
    async with gateway(faults={fault: 1.0}) as gw:
        answer = await gw.edit()
        assert answer.status == status
        assert (answer.error["type"], answer.error["code"]) == (type_, code)
        if fault == "429":
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["retry-after-ms"] == "1000"
        else:
            assert "Retry-After" not in answer.headers
            assert "retry-after-ms" not in answer.headers
        assert gw.sim.stats.faults == {fault: 1}
        assert gw.sim.stats.succeeded == 0


async def test_524_is_cloudflares_timeout_page() -> None:
    async with gateway(faults={"524": 1.0}) as gw:
        answer = await gw.edit()
        assert answer.status == 524
        assert b"A timeout occurred" in answer.body


async def test_html502_is_nginxs_page() -> None:
    async with gateway(faults={"html502": 1.0}) as gw:
        answer = await gw.edit()
        assert answer.status == 502
        assert answer.headers["Content-Type"].startswith("text/html")
        assert b"<center>nginx</center>" in answer.body


async def test_drop_reads_the_upload_then_closes_without_an_answer() -> None:
    async with gateway(faults={"drop": 1.0}) as gw:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await gw.edit()
        assert gw.sim.gateway.last["files"][0]["bytes"] == len(png())  # the upload arrived
        assert gw.sim.stats.faults == {"drop": 1}


async def test_slow_outlasts_a_short_timeout_then_answers() -> None:
    async with gateway(faults={"slow": 1.0}, slow_seconds=0.2) as gw:
        with pytest.raises(asyncio.TimeoutError):
            await gw.edit(timeout=0.05)
        started = time.perf_counter()
        assert (await gw.edit()).status == 200
        assert time.perf_counter() - started >= 0.2


async def test_malformed_is_a_200_that_is_not_json() -> None:
    async with gateway(faults={"malformed": 1.0}) as gw:
        answer = await gw.edit()
        assert answer.status == 200
        with pytest.raises(json.JSONDecodeError):
            answer.json()


async def test_notimage_is_a_200_whose_bytes_are_no_image() -> None:
    async with gateway(faults={"notimage": 1.0}) as gw:
        answer = await gw.edit()
        assert answer.status == 200
        with pytest.raises(UnidentifiedImageError):
            answer.picture()


def test_every_fault_has_a_test() -> None:
    tested = {f[0] for f in ERROR_FAULTS} | {"html502", "drop", "slow", "malformed", "notimage",
                                             "524"}
    assert tested == set(FAULTS)


async def statuses(gw: Gateway, count: int) -> list[int]:
    return [(await gw.edit(size="256x256")).status for _ in range(count)]


async def test_seeded_faults_repeat_exactly() -> None:
    faults = {"500": 0.3, "503": 0.2}
    async with gateway(faults=faults, seed=7) as gw:
        first = await statuses(gw, 20)
        await gw.session.post(gw.sim.base_url.removesuffix("/v1") + "/_sim/reset")
        assert await statuses(gw, 20) == first  # a reset replays the scenario
    async with gateway(faults=faults, seed=7) as gw:
        assert await statuses(gw, 20) == first
    async with gateway(faults=faults, seed=8) as gw:
        assert await statuses(gw, 20) != first
    assert {500, 503, 200} == set(first)


async def test_fail_first_faults_each_keys_first_attempts() -> None:
    async with gateway(fail_first={"500": 1, "drop": 1}) as gw:
        for key in ("task-a", "task-b"):
            headers = {"Idempotency-Key": key}
            assert (await gw.edit(headers=headers)).status == 500
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await gw.edit(headers=headers)
            assert (await gw.edit(headers=headers)).status == 200
        stats = gw.sim.stats
        assert stats.by_key == {"task-a": 3, "task-b": 3}
        assert stats.succeeded_by_key == {"task-a": 1, "task-b": 1}
        assert stats.faults == {"500": 2, "drop": 2}
        assert (stats.requests, stats.succeeded) == (6, 2)


async def test_fault_by_prompt_always_hits_that_task() -> None:
    async with gateway(fault_by_prompt={"SKU-13": "moderation"}) as gw:
        assert (await gw.edit(prompt="white background SKU-13")).status == 400
        assert (await gw.edit(prompt="white background SKU-13")).status == 400
        assert (await gw.edit(prompt="white background SKU-14")).status == 200


async def test_fault_by_prompt_with_counts_hits_only_that_tasks_first_attempts() -> None:
    async with gateway(fault_by_prompt={"SKU-13": {"502": 1, "500": 1}}) as gw:
        key = {"Idempotency-Key": "sku-13"}
        answers = [await gw.edit(prompt="SKU-13 on white", headers=key) for _ in range(3)]
        assert [a.status for a in answers] == [502, 500, 200]
        assert (await gw.edit(prompt="SKU-14 on white", headers=key)).status == 200
        assert gw.sim.stats.faults == {"502": 1, "500": 1}


# --- counters, options, ways to run ----------------------------------------------------------


async def test_counters_over_http_match_in_process_and_reset_zeroes_them(gw: Gateway) -> None:
    await gw.edit(headers={"Idempotency-Key": "k1"})
    await gw.edit(model="nope")
    over_http = (await gw.get("/_sim/stats")).json()
    assert over_http == gw.sim.stats.as_dict()
    assert (over_http["requests"], over_http["succeeded"], over_http["by_key"]) == (2, 1, {"k1": 1})
    async with gw.session.post(gw.sim.base_url.removesuffix("/v1") + "/_sim/reset") as response:
        assert (await response.json())["requests"] == 0
    assert gw.sim.stats.requests == 0
    assert gw.sim.stats.by_key == {}


async def test_the_last_request_record_never_holds_the_key(gw: Gateway) -> None:
    await gw.edit(headers={"Idempotency-Key": "k1"})
    last = await gw.get("/_sim/last")
    assert KEY.encode() not in last.body
    headers = last.json()["headers"]
    assert headers["Authorization"] is True
    assert headers["Idempotency-Key"] == "k1"
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")


def test_options_come_from_a_providers_simulator_mapping() -> None:
    providers = yaml.safe_load((REPO / "pipeline/config/providers.yaml").read_text())
    assert SimulatorOptions.from_mapping(providers["simulator"]["simulator"]) == SimulatorOptions()
    options = SimulatorOptions.from_mapping(yaml.safe_load(
        "{faults: {500: 0.1, drop: 0.05}, fail_first: {429: 2}, latency: 'normal:0.5,0.1',"
        " rate_limit: 30/min, seed: 3, response: url}"))
    assert dict(options.faults) == {"500": 0.1, "drop": 0.05}  # YAML's int keys are fault names
    assert dict(options.fail_first) == {"429": 2}


@pytest.mark.parametrize(("mapping", "named"), [
    ({"fautls": {}}, "fautls"),
    ({"faults": {"boom": 0.1}}, "boom"),
    ({"faults": {"500": 0.7, "502": 0.5}}, "add up"),
    ({"faults": {"500": "often"}}, "often"),
    ({"fail_first": {"500": -1}}, "fail_first"),
    ({"fault_by_prompt": {"x": "explode"}}, "explode"),
    ({"fault_by_prompt": {"x": {"explode": 1}}}, "explode"),
    ({"fault_by_prompt": {"x": {"500": 1.5}}}, "fault_by_prompt"),
    ({"latency": "gamma:1,2"}, "latency"),
    ({"latency": -1}, "latency"),
    ({"rate_limit": "fast"}, "rate_limit"),
    ({"response": "carrier pigeon"}, "response"),
])
def test_bad_options_are_refused_by_name(mapping: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SimulatorOptions.from_mapping(mapping)


async def test_simulator_thread_serves_counts_resets_and_stops() -> None:
    with SimulatorThread(SimulatorOptions(fail_first={"503": 1}, api_key=KEY)) as thread:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            gw = Gateway(None, session)
            headers = {"Idempotency-Key": "k"}
            first = await gw.edit(base_url=thread.base_url, headers=headers)
            second = await gw.edit(base_url=thread.base_url, headers=headers)
            assert (first.status, second.status) == (503, 200)
            stats = thread.stats()
            assert (stats.by_key, stats.succeeded_by_key) == ({"k": 2}, {"k": 1})
            stats.by_key["k"] = 99  # a copy: the simulator's own counters are untouched
            assert thread.stats().by_key == {"k": 2}
            thread.reset()
            assert thread.stats().requests == 0
        url = thread.base_url
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url.removesuffix("/v1") + "/_sim/stats")


def test_simulator_thread_that_cannot_start_raises_in_the_caller() -> None:
    with SimulatorThread() as running:
        port = int(running.base_url.rsplit(":", 1)[1].removesuffix("/v1"))
        with pytest.raises(OSError), SimulatorThread(SimulatorOptions(port=port)):
            pass


def test_simulator_thread_outside_a_with_block_says_so() -> None:
    with pytest.raises(RuntimeError, match="with"):
        _ = SimulatorThread().base_url


def test_serve_prints_its_address_and_stops_on_sigterm() -> None:
    code = "from pipeline.simulator.app import serve, SimulatorOptions; serve(SimulatorOptions())"
    with subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        line = readline_within(proc.stdout, 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert re.fullmatch(r"simulator listening on http://127\.0\.0\.1:\d+/v1\n", line)
