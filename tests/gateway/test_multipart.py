"""The images route's form, built as bytes: what aiohttp's FormData writes, and read back
whole by a multipart parser (aiohttp's, as the simulator reads it)."""

from __future__ import annotations

import base64
import io

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.gateway.routes import images, multipart
from pipeline.gateway.routes.multipart import File
from pipeline.simulator.request import read_form

# Names and values as users and file systems make them, minus control characters
# (FormData refuses those in a file name; covered on their own below).
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
parts = st.lists(st.tuples(st.text(st.characters(blacklist_categories=("Cs", "Cc")),
                                   min_size=1, max_size=12),
                           st.one_of(text, st.builds(File, text, st.sampled_from(
                               ["image/png", "image/jpeg", "application/octet-stream"]),
                               st.binary(max_size=64)))),
                 max_size=6)


async def formdata_bytes(form_parts: list[tuple[str, str | File]]) -> tuple[bytes, str]:
    """The same parts as the route's streamed path writes them: aiohttp's FormData."""
    payload = images._streamed(form_parts)()
    return await payload.as_bytes(), payload.content_type


def boundary(content_type: str) -> str:
    return content_type.split("boundary=", 1)[1]


async def read_back(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    """(name, filename, bytes) of each part, as the simulator's relay reads them over HTTP."""
    async def echo(request: web.Request) -> web.Response:
        got = [(p.field, p.filename, base64.b64encode(p.data).decode())
               for p in await read_form(request)]
        return web.json_response(got)

    app = web.Application()
    app.router.add_post("/form", echo)
    async with TestServer(app) as server, aiohttp.ClientSession() as session, session.post(
            server.make_url("/form"), data=body, headers={"Content-Type": content_type}
    ) as answer:
        assert answer.status == 200, await answer.text()
        return [(n, f, base64.b64decode(d)) for n, f, d in await answer.json()]


@settings(max_examples=150, deadline=None)
@given(parts)
async def test_the_bytes_are_what_formdata_writes(form_parts: list) -> None:  # type: ignore[type-arg]
    ours, our_type = multipart.form(form_parts)
    theirs, their_type = await formdata_bytes(form_parts)
    assert ours.replace(boundary(our_type).encode(), boundary(their_type).encode()) == theirs
    assert our_type.replace(boundary(our_type), boundary(their_type)) == their_type


async def test_a_parser_reads_every_part_back() -> None:
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"\r\n--not a boundary\r\n"
    body, content_type = multipart.form([
        ("model", "gpt-image-1"), ("prompt", 'recolour "navy" \\ é'),
        ("image[]", File('sku "12".png', "image/png", photo)),
        ("image[]", File("b.jpeg", "image/jpeg", b""))])
    assert await read_back(body, content_type) == [
        ("model", None, b"gpt-image-1"), ("prompt", None, 'recolour "navy" \\ é'.encode()),
        ("image[]", 'sku "12".png', photo), ("image[]", "b.jpeg", b"")]


async def test_a_newline_in_a_file_name_cannot_add_a_header() -> None:
    body, content_type = multipart.form([
        ("image", File("a\r\nX-Evil: 1\r\n.png", "image/png", b"pixels")),
        ("n", "1")])
    assert b"\r\nX-Evil" not in body
    assert await read_back(body, content_type) == [
        ("image", "a__X-Evil: 1__.png", b"pixels"), ("n", None, b"1")]


def test_a_file_to_stream_is_refused() -> None:
    with pytest.raises(TypeError, match="FormData"):
        multipart.form([("image", File("a.png", "image/png", io.BytesIO(b"x")))])
