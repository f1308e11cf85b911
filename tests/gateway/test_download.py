"""Where answer URLs may be fetched from, and what a gateway's error message becomes.

The rules (download.py) are checked on URLs alone; the headers, redirects and
messages against the hostile gateway (tests/gateway/hostile.py) over https on
loopback, with the Gateway client as the run uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config.settings import Provider, Secret
from pipeline.errors import BadResponse, StatusError
from pipeline.gateway.client import Gateway
from pipeline.gateway.download import Downloads
from pipeline.task import Location, Task
from tests.conftest import TEST_KEY, tiny_image
from tests.gateway.hostile import Hostile


async def public(host: str, port: int | None) -> list[str]:
    """A resolver for names in these tests: every name is one public address, offline."""
    return ["93.184.216.34"]


def downloads(gateway_url: str) -> Downloads:
    return Downloads(None, gateway_url, dict, aiohttp.ClientTimeout(total=5),  # type: ignore[arg-type]
                     resolve=public)


@pytest.mark.parametrize(("gateway", "url", "words"), [
    ("https://203.0.113.9/v1", "file:///etc/passwd", "not http(s)"),
    ("https://203.0.113.9/v1", "ftp://203.0.113.9/a.png", "not http(s)"),
    ("https://203.0.113.9/v1", "http://203.0.113.9/a.png", "a downgrade"),
    ("https://203.0.113.9/v1", "http://cdn.example.com/a.png", "not https"),
    ("http://127.0.0.1:8000/v1", "http://localhost:8000/a.png", "not https"),
    ("https://203.0.113.9/v1", "https://10.0.0.8/a.png", "internal address (10.0.0.8)"),
    ("https://203.0.113.9/v1", "https://169.254.169.254/latest", "internal address"),
    ("https://203.0.113.9/v1", "https://[::1]/a.png", "internal address (::1)"),
    ("https://203.0.113.9/v1", "https://[::ffff:192.168.1.1]/a.png", "internal address"),
    ("https://203.0.113.9/v1", "https://127.0.0.1/a.png", "internal address (127.0.0.1)"),
    ("https://203.0.113.9/v1", "https://user:pw@cdn.example.com/a.png", "user name"),
    ("https://203.0.113.9/v1", "https://10.0.0.1\\@cdn.example.com/a.png", "malformed"),
])
async def test_urls_that_must_not_be_fetched_are_refused(gateway: str, url: str,
                                                         words: str) -> None:
    with pytest.raises(BadResponse, match=words.replace("(", r"\(").replace(")", r"\)")):
        await downloads(gateway).check(url)


@pytest.mark.parametrize("url", ["https://2130706433/x.png", "https://0x7f.1/x.png"])
async def test_loopback_spelt_as_a_number_is_still_loopback(url: str) -> None:
    """The address check reads what the name resolves to (the system's own resolver; a
    numeric name needs no DNS), not how it is written."""
    real = Downloads(None, "https://203.0.113.9/v1", dict,  # type: ignore[arg-type]
                     aiohttp.ClientTimeout(total=5))
    with pytest.raises(BadResponse, match=r"internal address \(127\.0\.0\.1\)"):
        await real.check(url)


@pytest.mark.parametrize(("gateway", "url"), [
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/files/a.png"),  # its own origin
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:9000/files/a.png"),  # its own host
    ("https://10.0.0.5/v1", "https://10.0.0.5:8443/files/a.png"),  # its own host
    ("https://203.0.113.9/v1", "https://93.184.216.34/a.png"),  # public, https
])
async def test_urls_that_may_be_fetched_pass(gateway: str, url: str) -> None:
    await downloads(gateway).check(url)


@settings(max_examples=300, deadline=None)
@given(url=st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, rest: f"{scheme}://{rest}",
              st.sampled_from(["http", "https", "file", "HTTPS", "ftp", ""]),
              st.text(alphabet=st.characters(codec="utf-8"), max_size=40))))
def test_fuzz_any_url_is_allowed_or_refused_never_an_error(url: str) -> None:
    async def check() -> None:
        with contextlib.suppress(BadResponse):
            await downloads("https://203.0.113.9/v1").check(url)

    asyncio.run(check())


async def test_a_redirect_may_not_go_to_http() -> None:
    with pytest.raises(BadResponse, match="redirected to http"):
        await downloads("http://127.0.0.1:8000/v1").check(
            "http://127.0.0.1:8000/files/a.png", redirected=True)


# --- against the hostile gateway --------------------------------------------------------

@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    with Hostile(TEST_KEY) as gateway:
        yield gateway


@pytest.fixture
async def gateway(hostile: Hostile) -> AsyncIterator[Gateway]:
    connector = aiohttp.TCPConnector(ssl=hostile.client_ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        provider = Provider(name="hostile", base_url=hostile.base_url,
                            api_key=Secret(TEST_KEY), api_key_env=None,
                            headers={"X-Org": "org-secret"})
        yield Gateway(session, provider, 10)


def task(tmp_path: Path, case: str, **fields: Any) -> Task:
    image = tiny_image(tmp_path / "a.png")
    return Task(id=case, images=(image,), prompt=f"Recolor it [{case}]",
                where=Location(tmp_path / "m.yaml", 1), root=tmp_path,
                fields={"model": "gpt-image-1", **fields},
                placeholders={"dir": str(tmp_path), "stem": "a"})


async def test_the_key_goes_as_bearer_to_the_gateway_and_nowhere_else(
        tmp_path: Path, hostile: Hostile, gateway: Gateway) -> None:
    # The hostile gateway answers 401 unless Authorization is exactly "Bearer <key>".
    for case in ("ok", "ok-url-own", "ok-redirect"):
        answer = await gateway.edit(task(tmp_path, case), "k")
        assert answer.formats == ["png"]
    own = hostile.seen.headers["gw/files/ok.png"] + hostile.seen.headers["gw/files/to-cdn.png"]
    assert [h["Authorization"] for h in own] == [f"Bearer {TEST_KEY}"] * 2
    (cdn,) = hostile.seen.headers["cdn/files/ok.png"]
    assert "Authorization" not in cdn and "X-Org" not in cdn


async def test_the_post_follows_no_redirect(tmp_path: Path, hostile: Hostile,
                                            gateway: Gateway) -> None:
    hits = hostile.seen.plain_hits
    with pytest.raises(StatusError) as caught:
        await gateway.edit(task(tmp_path, "post-307"), "k")
    assert caught.value.status == 307 and "not followed" in caught.value.message
    assert hostile.seen.plain_hits == hits


async def test_an_error_message_is_cut_stripped_and_redacted(tmp_path: Path,
                                                             gateway: Gateway) -> None:
    with pytest.raises(StatusError) as echoed:
        await gateway.edit(task(tmp_path, "echo-key"), "k")
    assert TEST_KEY not in str(echoed.value)
    assert "bad header Bearer ***; your key *** is wrong" in echoed.value.message
    with pytest.raises(StatusError) as huge:  # 20 MB, under the default 64 MB cap: parsed
        await gateway.edit(task(tmp_path, "huge-message"), "k")
    assert huge.value.message == "x" * 2000 + " … (cut)"
    with pytest.raises(StatusError) as escapes:
        await gateway.edit(task(tmp_path, "escapes"), "k")
    assert escapes.value.message == "RED  done"


async def test_a_url_answer_is_cut_off_at_the_models_cap(tmp_path: Path, hostile: Hostile,
                                                         gateway: Gateway) -> None:
    gateway.max_answer_bytes = lambda model: 1024 * 1024  # type: ignore[method-assign]
    with pytest.raises(BadResponse, match=r"over the 1\.0 MB limit"):
        await gateway.edit(task(tmp_path, "huge-url"), "k")
