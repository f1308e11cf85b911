"""The review page in a real browser, driven by real key presses, then --redo-rejected.

A manifest runs against the simulator; `python -m pipeline review` serves it as a
subprocess; Selenium drives Debian's Chromium by keyboard: approve three results,
reject one with a note, undo it and reject it again, reload — the decisions are still there —
and `run --redo-rejected` sends exactly the rejected one, keeping its image as
`.rejected-1`.

Set IMGEDIT_SCREENSHOT_REVIEW=docs/review.png to refresh the README's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from pipeline.simulator.app import SimulatorOptions, SimulatorThread
from tests.browser import webdriver
from tests.conftest import ROOT, TEST_KEY, Cli, wait_until, write_manifest

MANIFEST = """
    version: 1
    provider: simulator
    limits: {rate: unlimited}  # the default 30/min spaces requests 2 s apart
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    tasks:
      - id: shirt-navy
        images: products/shirt.jpg
        mask: products/shirt-mask.png
        prompt: Recolor the shirt navy blue
      - id: shirt-navy-mini
        model: gpt-image-1-mini
        images: products/shirt.jpg
        prompt: Recolor the shirt navy blue
        output: "{dir}/{stem}.mini.{ext}"
      - glob: "catalog/**/*.jpg"
        prompt: Put the product on a pure white background with a soft shadow
"""
# The page lists results by source image: the three catalog photos, then the shirt
# through two models, side by side.
ORDER = ["catalog/bags/tote-green.jpg", "catalog/mugs/mug-blue.jpg",
         "catalog/mugs/mug-yellow.jpg", "shirt-navy", "shirt-navy-mini"]


@pytest.fixture
def reviewed(tmp_path: Path) -> Iterator[tuple[Path, Cli, SimulatorThread]]:
    for sub in ("products", "catalog"):
        shutil.copytree(ROOT / "jobs" / sub, tmp_path / sub,
                        ignore=shutil.ignore_patterns("*.edited.*"))
    write_manifest(tmp_path, MANIFEST)
    cli = Cli(tmp_path)
    with SimulatorThread(SimulatorOptions(api_key=TEST_KEY)) as sim:
        done = cli("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
        assert done.returncode == 0, done.stderr
        yield tmp_path, cli, sim


def start_review(cli: Cli) -> tuple[subprocess.Popen[str], str]:
    server = cli.popen("review", "job.yaml", "--no-browser")
    assert server.stdout is not None
    first = server.stdout.readline()  # printed once the port is bound
    assert first.startswith("review: http://127.0.0.1:"), (first, server.stderr)
    return server, first.split(" ", 1)[1].strip()


def tiles(browser: object) -> dict[str, str]:
    """task id → data-decision of every tile on the page."""
    return browser.execute_script(  # type: ignore[attr-defined, no-any-return]
        "var o = {}; document.querySelectorAll('.tile').forEach(function (t) {"
        " o[t.dataset.id] = t.dataset.decision; }); return o;")


def current(browser: object) -> str:
    return browser.execute_script(  # type: ignore[attr-defined, no-any-return]
        "var t = document.querySelector('.tile.current'); return t && t.dataset.id;")


def test_review_by_keyboard_then_redo_rejected(reviewed: tuple[Path, Cli, SimulatorThread],
                                               tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    folder, cli, sim = reviewed
    server, url = start_review(cli)
    try:
        with webdriver.driver(tmp_path / "profile") as browser:
            browser.get(url)  # type: ignore[attr-defined]
            wait_until(lambda: len(tiles(browser)) == 5, "the page to list 5 results")
            assert list(tiles(browser)) == ORDER and current(browser) == ORDER[0]
            keys = ActionChains(browser)

            def press(*sequence: str) -> None:
                keys.send_keys(*sequence).perform()

            press(Keys.ARROW_RIGHT, "j", Keys.ARROW_LEFT, "k")  # there and back
            assert current(browser) == ORDER[0]
            for n in range(3):  # a: approve and move on
                press("a")
                wait_until(lambda n=n: tiles(browser)[ORDER[n]] == "approved", f"approve {n}")
            assert current(browser) == "shirt-navy"
            press("r")  # the inline note field, not window.prompt
            wait_until(lambda: browser.switch_to.active_element.get_attribute("id") == "note",
                       "the note field to take the focus")
            press("collar is still red", Keys.ENTER)
            wait_until(lambda: tiles(browser)["shirt-navy"] == "rejected", "the rejection")
            assert current(browser) == "shirt-navy-mini"  # moved on
            press("u")  # undo: the last decision (the rejection) is taken back, and shown
            assert current(browser) == "shirt-navy"
            wait_until(lambda: tiles(browser)["shirt-navy"] == "", "the undo")
            press("r")
            wait_until(lambda: browser.switch_to.active_element.get_attribute("id") == "note",
                       "the note field again")
            press("collar is still red", Keys.ENTER)
            wait_until(lambda: tiles(browser)["shirt-navy"] == "rejected", "the rejection")

            browser.refresh()  # type: ignore[attr-defined]
            wait_until(lambda: len(tiles(browser)) == 5, "the page after reload")
            assert tiles(browser) == {**dict.fromkeys(ORDER[:3], "approved"),
                                      "shirt-navy": "rejected", "shirt-navy-mini": ""}
            assert current(browser) == "shirt-navy-mini"  # the URL's #id keeps the place
            press("k")
            assert current(browser) == "shirt-navy"
            verdict = browser.find_element("id", "verdict").text  # type: ignore[attr-defined]
            assert verdict == "✕ Rejected: collar is still red"
            if os.environ.get("IMGEDIT_SCREENSHOT_REVIEW"):
                screenshot(browser, ROOT / os.environ["IMGEDIT_SCREENSHOT_REVIEW"], tmp_path)

            def choose(select: str, value: str) -> None:
                Select(browser.find_element("id", select)).select_by_value(value)  # type: ignore[attr-defined]

            choose("f-decision", "rejected")
            assert list(tiles(browser)) == ["shirt-navy"]
            choose("f-decision", "none")  # to review
            assert list(tiles(browser)) == ["shirt-navy-mini"]
            choose("f-decision", "")
            choose("f-model", "gpt-image-1-mini")
            assert list(tiles(browser)) == ["shirt-navy-mini"]
            choose("f-model", "")
            browser.find_element("id", "f-prompt").send_keys("navy", Keys.ENTER)  # type: ignore[attr-defined]
            assert list(tiles(browser)) == ["shirt-navy", "shirt-navy-mini"]
            assert current(browser) == "shirt-navy-mini"
            press("k")  # the keys work again once the field is left
            assert current(browser) == "shirt-navy"
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode == 0

    status = json.loads(cli("status", "job.yaml", "--json").stdout)
    assert status["reviews"] == {"approved": 3, "rejected": 1, "unreviewed": 1}
    before = sim.stats()
    redo = cli("run", "job.yaml", "--base-url", sim.base_url, "--redo-rejected")
    assert redo.returncode == 0, redo.stderr
    after = sim.stats()
    assert after.requests - before.requests == 1  # exactly the rejected one
    new_keys = set(after.by_key) - set(before.by_key)
    assert len(new_keys) == 1  # and under a new Idempotency-Key
    kept = folder / "products" / "shirt.edited.rejected-1.png"
    assert kept.exists() and (folder / "products" / "shirt.edited.png").exists()
    sidecar = json.loads((folder / "products" / "shirt.edited.rejected-1.json").read_text())
    assert sidecar["task_id"] == "shirt-navy"
    again = cli("run", "job.yaml", "--base-url", sim.base_url, "--redo-rejected")
    assert again.returncode == 0 and sim.stats().requests == after.requests  # nothing left


def screenshot(browser: object, out: Path, tmp_path: Path) -> None:
    raw = tmp_path / "review-raw.png"
    browser.save_screenshot(str(raw))  # type: ignore[attr-defined]
    with Image.open(raw) as image:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
