"""answer.py: a 200's body parsed against the schema, within bounds; never another exception.

Plain functions on bytes, plus a fuzz run (hypothesis): whatever the body, the
decoder returns checked images or raises BadResponse.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.errors import BadResponse
from pipeline.gateway.answer import (
    MAX_DEPTH,
    MB,
    b64_image,
    check_image,
    checked_images,
    decode_images_answer,
    parse_json,
    take,
    usage_of,
)
from tests.gateway.hostile import encoded, pixel_bomb, png


async def no_fetch(url: str) -> bytes:
    raise AssertionError(f"nothing should be downloaded here: {url}")


def decode(body: bytes | dict[str, Any], n: int = 1, **kw: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(decode_images_answer(raw, n=n, fetch=kw.pop("fetch", no_fetch), **kw))


def item(data: bytes | None = None) -> dict[str, str]:
    return {"b64_json": base64.b64encode(data or png()).decode()}


# --- check_image ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_three_formats_the_api_answers_pass_whole(fmt: str) -> None:
    data = encoded(fmt)
    assert check_image(data) == (data, fmt.lower())


@pytest.mark.parametrize(("fmt", "words"), [("GIF", "a GIF"), ("TIFF", "a TIFF"),
                                            ("BMP", "a BMP"), ("SVG", "an SVG")])
def test_other_formats_are_refused_by_name(fmt: str, words: str) -> None:
    with pytest.raises(BadResponse, match=f"is {words}, not png, jpeg or webp"):
        check_image(encoded(fmt))


def test_a_truncated_image_fails_its_full_decode() -> None:
    out = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(out, "PNG")
    whole = out.getvalue()
    with pytest.raises(BadResponse, match="png image is corrupt"):
        check_image(whole[: len(whole) - 40])


def test_pixels_that_do_not_decode_fail_even_when_every_checksum_holds() -> None:
    """Garbage inside IDAT with its CRC made right: Pillow's verify() passes it, load()
    does not. Only a full decode tells."""
    out = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(out, "PNG")
    data = bytearray(out.getvalue())
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    data[start + 20:start + 60] = b"\xff" * 40
    crc = zlib.crc32(bytes(data[start - 4:start + length])) & 0xFFFFFFFF
    data[start + length:start + length + 4] = struct.pack(">I", crc)
    with Image.open(io.BytesIO(bytes(data))) as image:
        image.verify()  # what the client did before: it passes
    with pytest.raises(BadResponse, match="png image is corrupt"):
        check_image(bytes(data))


def test_a_pixel_bomb_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(BadResponse, match="decompression bomb"):
        check_image(pixel_bomb(30000, 30000))
    with pytest.raises(BadResponse, match="7000x7000 pixels, over the 40,000,000"):
        check_image(pixel_bomb(7000, 7000))  # under Pillow's own limit, over ours


# --- parse_json, usage_of, b64 -------------------------------------------------------------

def test_json_nested_10000_deep_is_refused_without_a_crash() -> None:
    with pytest.raises(BadResponse, match="nested over 1000 deep"):
        parse_json(b'{"data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")


@pytest.mark.parametrize("depth", [33, 500])
def test_json_nested_past_the_limit_is_refused(depth: int) -> None:
    with pytest.raises(BadResponse, match=f"nested {MAX_DEPTH + 1} deep"):
        parse_json(b"[" * depth + b"]" * depth)
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[' * 40 + '"\\"' + ']' * 40
    assert parse_json(json.dumps({"revised_prompt": text}).encode()) == {"revised_prompt": text}


def test_a_body_of_many_arrays_is_refused() -> None:
    with pytest.raises(BadResponse, match="over 100,000 objects and arrays"):
        parse_json(b"[" + b"[]," * 200_000 + b"[]]")


@pytest.mark.parametrize(("usage", "kept", "notes"), [
    ({"input_tokens": 10, "output_tokens": 20}, {"input_tokens": 10, "output_tokens": 20}, 0),
    ("lol", None, 1),
    ({"input_tokens": float("nan"), "output_tokens": 5}, {"output_tokens": 5}, 1),
    ({"input_tokens": -100000, "output_tokens": True}, None, 2),
    ({"input_tokens": 10**400}, None, 1),
    ({"input_tokens_details": {"image_tokens": 3, "text_tokens": "x"}},
     {"input_tokens_details": {"image_tokens": 3}}, 1),
    ({"\x1b[2J": 5, "output_tokens": 1}, {"output_tokens": 1}, 1),
    (None, None, 0),
])
def test_usage_keeps_only_counts_and_notes_the_rest(usage: Any, kept: Any, notes: int) -> None:
    found, said = usage_of(usage)
    assert found == kept
    assert len(said) == notes


def test_base64_is_sized_by_its_length_before_it_is_decoded() -> None:
    # A 300 MB-shaped answer in miniature: 4 MB of text against a 1 MB limit. The length
    # alone refuses it (the text is not even valid base64, so a decode would say otherwise).
    with pytest.raises(BadResponse, match=r"would decode to 3\.0 MB, over the 1\.0 MB limit"):
        b64_image("!" * (4 * MB), max_bytes=MB)


@pytest.mark.parametrize("value", [123, None, ["x"], {"a": 1}])
def test_b64_json_of_another_type_is_a_bad_response(value: Any) -> None:
    with pytest.raises(BadResponse, match="not a string"):
        b64_image(value, max_bytes=MB)


# --- decode_images_answer ---------------------------------------------------------------

def test_exactly_n_images_count_and_extras_are_noted_not_decoded() -> None:
    extras = [{"b64_json": "not base64 at all"}] * 99  # never looked at
    images = decode({"data": [item(), *extras]}, n=1)
    assert images.formats == ["png"]
    assert images.notes == ["the answer held 100 images; 1 asked for: the other 99 were "
                            "ignored"]


def test_fewer_images_than_asked_fail_and_carry_the_usage() -> None:
    with pytest.raises(BadResponse, match="holds 1 image") as caught:
        decode({"data": [item()], "usage": {"output_tokens": 7}}, n=2)
    assert caught.value.usage == {"output_tokens": 7}


@pytest.mark.parametrize(("body", "words"), [
    ({"data": ["x"]}, "data[0] is a str"),
    ({"data": [{"url": 5}]}, "data[0].url is int"),
    ({"data": [{}]}, "neither b64_json nor url"),
    ({"data": "x"}, "'data' is a str"),
    ({"nothing": 1}, "'data' is missing"),
    ([1, 2], "a JSON list, not an object"),
    ({"data": [{"url": "data:text/plain;base64,QUJD"}]}, "no base64 image"),
])
def test_wrong_shapes_are_bad_responses(body: Any, words: str) -> None:
    with pytest.raises(BadResponse, match=words.replace("[", r"\[").replace("]", r"\]")):
        decode(body)


def test_a_revised_prompt_is_kept_short_and_clean() -> None:
    images = decode({"data": [{**item(), "revised_prompt": "\x1b[31mred\x1b[0m" + "y" * 9000}]})
    assert images.revised_prompt.startswith("red") and "\x1b" not in images.revised_prompt
    assert len(images.revised_prompt) < 4100


def test_a_url_goes_to_the_callers_fetch_and_is_checked() -> None:
    async def fetch(url: str) -> bytes:
        return encoded("GIF") if url.endswith(".gif") else png()

    assert decode({"data": [{"url": "https://cdn.example/a.png"}]}, fetch=fetch).formats == [
        "png"]
    with pytest.raises(BadResponse, match="a GIF"):
        decode({"data": [{"url": "https://cdn.example/a.gif"}]}, fetch=fetch)


def test_sources_from_any_route_pass_the_same_checks() -> None:
    """What chat and gemini routes find (bytes, data: URLs, http URLs) goes through
    `take` and `checked_images`: the count, the size and every image checked."""
    async def fetch(url: str) -> bytes:
        return encoded("JPEG")

    data_url = "data:image/webp;base64," + base64.b64encode(encoded("WEBP")).decode()
    notes: list[str] = []
    sources = take([png(), data_url, "https://cdn.example/a.jpg", b"extra"], 3, notes)
    images, formats = asyncio.run(checked_images(sources, n=3, max_bytes=MB, fetch=fetch))
    assert formats == ["png", "webp", "jpeg"] and len(images) == 3
    assert notes == ["the answer held 4 images; 3 asked for: the other 1 were ignored"]
    with pytest.raises(BadResponse, match=r"over the 0\.0 MB limit"):
        asyncio.run(checked_images([png()], n=1, max_bytes=10, fetch=fetch))
    with pytest.raises(BadResponse, match="holds 1 image"):
        take([png()], 2, [])


# --- fuzz: never anything but images or a BadResponse ---------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)
ITEM = st.fixed_dictionaries({}, optional={
    "b64_json": st.one_of(JSON, st.sampled_from([base64.b64encode(png()).decode(),
                                                 base64.b64encode(encoded("GIF")).decode()])),
    "url": st.one_of(JSON, st.sampled_from(["https://x.example/a.png", "file:///etc/passwd",
                                            "data:image/png;base64,AAAA"])),
    "revised_prompt": JSON})
ANSWER = st.fixed_dictionaries({}, optional={
    "data": st.one_of(JSON, st.lists(st.one_of(ITEM, JSON), max_size=4)),
    "usage": JSON, "created": JSON})


def _decodes_or_refuses(body: bytes, n: int) -> None:
    async def fetch(url: str) -> bytes:
        raise BadResponse(f"not fetched in the fuzz run: {url}")

    try:
        images = decode(body, n=n, fetch=fetch)
    except BadResponse:
        return
    assert len(images.images) == len(images.formats) == n
    assert all(fmt in ("png", "jpeg", "webp") for fmt in images.formats)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=ANSWER, n=st.integers(min_value=1, max_value=3))
def test_fuzz_any_json_answer_gives_images_or_a_bad_response(answer: Any, n: int) -> None:
    _decodes_or_refuses(json.dumps(answer).encode(), n)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300))
def test_fuzz_any_bytes_give_images_or_a_bad_response(body: bytes) -> None:
    _decodes_or_refuses(body, 1)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), fmt=st.sampled_from(["PNG", "JPEG", "WEBP"]),
       cut=st.integers(min_value=0, max_value=400))
def test_fuzz_damaged_images_give_an_image_or_a_bad_response(data: bytes, fmt: str,
                                                             cut: int) -> None:
    real = encoded(fmt)
    damaged = real[:cut] + data + real[cut + len(data):]
    try:
        checked, found = check_image(damaged)
    except BadResponse:
        return
    assert found == fmt.lower() and checked == damaged
