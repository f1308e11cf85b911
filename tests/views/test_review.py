"""The review server over loopback HTTP: the token, the files it may serve, the JSON API.

A real run against the simulator makes the ledger, sidecars and pictures; the
server is the real aiohttp app on 127.0.0.1, asked with a real HTTP client.
The page itself, driven by keyboard in Chromium, is test_review_browser.py's.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline.simulator.app import SimulatorOptions, SimulatorThread
from pipeline.views.review import Session, make_app, open_review
from tests.conftest import ROOT, TEST_KEY, Cli, wait_until, write_manifest

MANIFEST = """
    version: 1
    provider: simulator
    limits: {rate: unlimited}  # the default 30/min spaces requests 2 s apart
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    tasks:
      - id: shirt-mini
        model: gpt-image-1-mini
        images: products/shirt.jpg
        prompt: Recolor the shirt navy blue
        output: "{dir}/{stem}.{id}.{ext}"
      - id: shirt-full
        images: products/shirt.jpg
        prompt: Recolor the shirt navy blue
        output: "{dir}/{stem}.{id}.{ext}"
      - id: soap
        images: products/soap.png
        prompt: Add the slogan to the soap
      - glob: "catalog/bags/*.jpg"
        prompt: Put the product on white
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("review")
    for sub in ("products", "catalog"):
        shutil.copytree(ROOT / "jobs" / sub, folder / sub,
                        ignore=shutil.ignore_patterns("*.edited.*"))
    write_manifest(folder, MANIFEST)
    options = SimulatorOptions.from_mapping({"fault_by_prompt": {"slogan": "moderation"},
                                             "api_key": TEST_KEY})
    with SimulatorThread(options) as sim:
        done = Cli(folder)("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    assert done.returncode == 1, done.stderr  # the soap is refused
    return folder


@pytest.fixture
def session(folder: Path) -> Iterator[Session]:
    review = open_review(folder / "job.yaml", None)
    yield review
    review.ledger.close()
    shutil.rmtree(review.previews)


@pytest.fixture
async def base(session: Session) -> AsyncIterator[str]:
    runner = web.AppRunner(make_app(session))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def fetch(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        if body is None and raw is None:
            async with http.get(url, allow_redirects=False) as answer:
                return answer.status, await answer.read()
        data = raw if raw is not None else json.dumps(body).encode()
        async with http.post(url, data=data) as answer:
            return answer.status, await answer.read()


async def results(base: str, token: str) -> list[dict[str, Any]]:
    status, body = await fetch(f"{base}/{token}/api/results")
    assert status == 200
    items: list[dict[str, Any]] = json.loads(body)["items"]
    return items


async def test_without_the_token_everything_is_forbidden(base: str, session: Session) -> None:
    token = session.token
    items = await results(base, token)
    key = items[0]["outputs"][0]["key"]
    for path in ("/", "/api/results", f"/{token}", f"/{token}x/api/results",
                 f"/{token[:-1]}/api/results", f"/x/{token}/api/results", f"/file/{key}",
                 f"/{token.upper()}/file/{key}"):
        status, _ = await fetch(base + path)
        assert status == 403, path
    status, _ = await fetch(f"{base}/nope/api/decide", {"id": "soap", "decision": "approved"})
    assert status == 403


async def test_results_sit_together_by_source_image_with_their_cost(base: str,
                                                                    session: Session) -> None:
    items = await results(base, session.token)
    assert [(i["source"], i["id"]) for i in items] == [
        ("catalog/bags/tote-green.jpg", "catalog/bags/tote-green.jpg"),
        ("products/shirt.jpg", "shirt-full"), ("products/shirt.jpg", "shirt-mini"),
        ("products/soap.png", "soap")]
    by_id = {i["id"]: i for i in items}
    assert by_id["shirt-full"]["model"] == "gpt-image-1"
    assert by_id["shirt-mini"]["model"] == "gpt-image-1-mini"
    assert 0 < by_id["shirt-mini"]["cost"] < by_id["shirt-full"]["cost"]
    assert by_id["soap"]["state"] == "failed" and by_id["soap"]["cost"] is None
    assert by_id["soap"]["outputs"] == [] and "moderation" in by_id["soap"]["reason"]


async def test_only_the_files_the_ledger_names_are_served(base: str, session: Session,
                                                          folder: Path) -> None:
    token = session.token
    item = next(i for i in await results(base, token) if i["id"] == "shirt-full")
    output = folder / "products" / "shirt.shirt-full.png"
    status, body = await fetch(f"{base}/{token}/file/{item['outputs'][0]['key']}")
    assert status == 200 and body == output.read_bytes()
    for kind in ("thumb", "view"):
        status, body = await fetch(f"{base}/{token}/{kind}/{item['inputs'][0]['key']}")
        assert status == 200 and body[:4] == b"RIFF"  # a WEBP preview
    for path in ("file/..%2F..%2Fjob.yaml", "file/../../job.yaml", "file/" + "0" * 24,
                 "view/%2Fetc%2Fpasswd", "file/job.ledger.sqlite"):
        status, body = await fetch(f"{base}/{token}/{path}")
        assert status in (403, 404), path
        assert b"version: 1" not in body and b"SQLite" not in body


async def test_a_sidecar_naming_a_non_image_gets_nothing(base: str, session: Session,
                                                         folder: Path) -> None:
    sidecar = folder / "catalog" / "bags" / "tote-green.edited.json"
    original = sidecar.read_text()
    data = json.loads(original)
    data["inputs"] = [str(folder / "job.yaml")]  # a hand-edited (or hostile) sidecar
    sidecar.write_text(json.dumps(data))
    try:
        items = await results(base, session.token)
        tote = next(i for i in items if i["id"] == "catalog/bags/tote-green.jpg")
        status, body = await fetch(f"{base}/{session.token}/file/{tote['inputs'][0]['key']}")
        assert status == 404 and b"version" not in body
    finally:
        sidecar.write_text(original)


async def test_decide_and_undo_through_the_api(base: str, session: Session,
                                               folder: Path) -> None:
    api = f"{base}/{session.token}/api"
    status, body = await fetch(f"{api}/decide", {"id": "shirt-mini", "decision": "rejected",
                                                 "note": "collar still red"})
    assert status == 200 and json.loads(body)["decision"] == "rejected"
    status, body = await fetch(f"{api}/decide", {"id": "shirt-full", "decision": "approved"})
    assert status == 200
    by_id = {i["id"]: i for i in await results(base, session.token)}
    assert (by_id["shirt-mini"]["decision"], by_id["shirt-mini"]["note"]) == (
        "rejected", "collar still red")
    assert by_id["shirt-full"]["decision"] == "approved"
    status, body = await fetch(f"{api}/undo", {"id": "shirt-full"})
    assert status == 200 and json.loads(body)["decision"] is None
    # a failed task has no result to judge; bad bodies are 400s, never a traceback
    status, body = await fetch(f"{api}/decide", {"id": "soap", "decision": "approved"})
    assert status == 409 and b"no result to review" in body
    for bad in ({"id": "shirt-full", "decision": "maybe"}, {"decision": "approved"}, [1],
                {"id": "shirt-full", "decision": "approved", "note": 5}):
        status, _ = await fetch(f"{api}/decide", bad)
        assert status == 400, bad
    status, _ = await fetch(f"{api}/decide", raw=b"{not json")
    assert status == 400
    status, _ = await fetch(f"{api}/decide", raw=b"x" * 200_000)
    assert status == 413
    # what the server wrote is what `status` reads
    done = Cli(folder)("status", "job.yaml", "--json")
    assert json.loads(done.stdout)["reviews"] == {"approved": 0, "rejected": 1, "unreviewed": 2}
    await fetch(f"{api}/undo", {"id": "shirt-mini"})


def test_the_command_prints_its_url_and_stops_cleanly(folder: Path) -> None:
    cli = Cli(folder)
    server = cli.popen("review", "job.yaml", "--no-browser")
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("review: http://127.0.0.1:") and line.rstrip().endswith("/")
        url = line.split(" ", 1)[1].strip()
        with urllib.request.urlopen(url) as page:
            assert b"imgedit review" in page.read()
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    missing = cli("review", "other.yaml", "--no-browser")
    assert missing.returncode == 2 and "no ledger at" in missing.stderr


def test_the_page_opens_in_a_browser_where_one_exists(folder: Path, tmp_path: Path) -> None:
    """$BROWSER stands in for the desktop's browser: it is handed the printed URL. With no
    display, no browser is tried (a console one would take the terminal) and the review
    works all the same."""
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    # Written aside, then renamed: the test must never read the file half written.
    script.write_text(f'#!/bin/sh\necho "$1" > {opened}.part && mv {opened}.part {opened}\n')
    script.chmod(0o755)
    cli = Cli(folder)
    for env, expect_open in (({"DISPLAY": ":0", "BROWSER": f"{script} %s"}, True),
                             ({"DISPLAY": "", "BROWSER": f"{script} %s"}, False)):
        opened.unlink(missing_ok=True)
        server = cli.popen("review", "job.yaml", env=env)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split(" ", 1)[1].strip()
            assert server.stdout.readline().startswith("(Ctrl-C to stop")
            if expect_open:
                wait_until(opened.exists, "the browser to be handed the URL")
                assert opened.read_text().strip() == url
            with urllib.request.urlopen(url) as page:
                assert page.status == 200
        finally:
            server.terminate()
            _out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert expect_open or not opened.exists()


def test_costs_are_said_to_be_simulated_after_simulator_runs(folder: Path) -> None:
    review = open_review(folder / "job.yaml", None)
    try:
        assert review.results()["simulated"] is True  # every run went to `provider: simulator`
    finally:
        review.ledger.close()
        shutil.rmtree(review.previews)
