"""The HTML review report: built from a real run against the simulator, opened in real Chromium.

One module-scoped scenario (`catalog`): the demo's product pictures, a manifest with
two-input, masked, globbed, n=2, refused (moderation) and lost (dropped connection)
tasks, run by `python -m pipeline run` against a simulator on loopback, then
`python -m pipeline report`. The unit tests read that page's HTML; the browser test
opens it in headless Chromium (tests/browser/chromium.py).

Set IMGEDIT_SCREENSHOT=docs/report.png to refresh the README's screenshot from the run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from pipeline.errors import InputError
from pipeline.ledger.durable import FILE_MODE, is_temp_name
from pipeline.ledger.store import Attempt, Ledger, Outcome
from pipeline.simulator.app import SimulatorOptions, SimulatorThread
from pipeline.task import Location, Task
from pipeline.views.report import assets_folder, write_report
from pipeline.views.thumbnails import THUMB_PX
from tests.browser import chromium
from tests.conftest import ROOT, TEST_KEY, Cli, tiny_image, write_manifest

MANIFEST = """
    version: 1
    provider: simulator
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    tasks:
      - id: gift-basket
        images: [products/incense-kit.png, products/soap.png]
        prompt: 创建一个包含这两个物品的精美礼品篮
      - id: shirt-navy
        images: products/shirt.jpg
        mask: products/shirt-mask.png
        prompt: Recolor the shirt navy blue
      - glob: "catalog/**/*.jpg"
        prompt: Put the product on a pure white background with a soft shadow
      - id: mug-pair
        images: catalog/mugs/mug-blue.jpg
        n: 2
        prompt: Two variations of the mug on a marble table
        output: "{dir}/{stem}.pair.{ext}"
      - id: soap-logo
        images: products/soap.png
        prompt: 'Add the <BrandX> logo & the slogan "Just do it"'
        output: "{dir}/{stem}.logo.{ext}"
      - id: tote-red
        images: catalog/bags/tote-green.jpg
        prompt: Recolor the tote bag to crimson red
        output: "{dir}/{stem}.red.{ext}"
"""
FAILED = {"soap-logo"}  # the simulator refuses it: moderation_blocked
UNKNOWN = {"tote-red"}  # its connection drops after the upload, every time
SUCCEEDED = {"gift-basket", "shirt-navy", "mug-pair", "catalog/bags/tote-green.jpg",
             "catalog/mugs/mug-blue.jpg", "catalog/mugs/mug-yellow.jpg"}


@dataclass
class Scenario:
    folder: Path
    manifest: Path
    report: Path
    cli: Cli


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    folder = tmp_path_factory.mktemp("catalog")
    for sub in ("products", "catalog"):
        shutil.copytree(ROOT / "jobs" / sub, folder / sub,
                        ignore=shutil.ignore_patterns("*.edited.*"))
    manifest = write_manifest(folder, MANIFEST)
    cli = Cli(folder)
    faults = {"slogan": "moderation", "crimson": "drop"}
    with SimulatorThread(SimulatorOptions.from_mapping({"fault_by_prompt": faults,
                                                             "api_key": TEST_KEY})) as sim:
        run = cli("run", manifest.name, "--base-url", sim.base_url, "--rate", "100/s",
                  "--retries", "1", "--quiet")
    assert run.returncode == 1, run.stderr  # 1: finished, some tasks failed
    done = cli("report", manifest.name)
    assert done.returncode == 0, done.stderr
    report = folder / "job.report.html"
    assert done.stdout.strip() == f"report: {report}"
    yield Scenario(folder, manifest, report, cli)


# --- reading the page back -----------------------------------------------------------------

@dataclass
class CardSeen:
    id: str
    state: str
    classes: str
    text: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)  # (class, href)
    images: list[str] = field(default_factory=list)  # img src


class Page(HTMLParser):
    """Every card of a report: its id, state, text, links and thumbnails."""

    def __init__(self, text: str):
        super().__init__()
        self.cards: dict[str, CardSeen] = {}
        self.all_links: list[str] = []
        self.all_images: list[str] = []
        self._card: CardSeen | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "article":
            self._card = CardSeen(a["data-id"], a["data-state"], a["class"])
            self.cards[self._card.id] = self._card
        elif tag == "a":
            self.all_links.append(a["href"])
            if self._card:
                self._card.links.append((a.get("class", ""), a["href"]))
        elif tag == "img":
            self.all_images.append(a["src"])
            if self._card:
                self._card.images.append(a["src"])
        elif tag in ("link", "script", "iframe") and ("src" in a or "href" in a):
            raise AssertionError(f"external resource on the page: <{tag} {a}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._card = None

    def handle_data(self, data: str) -> None:
        if self._card:
            self._card.text += data


def read(report: Path) -> Page:
    return Page(report.read_text(encoding="utf-8"))


def target(report: Path, href: str) -> Path:
    assert not urlsplit(href).scheme and not href.startswith("/"), f"not relative: {href}"
    return (report.parent / unquote(href)).resolve()


# --- unit level: the page's HTML ----------------------------------------------------------

def test_every_task_is_a_card_with_its_state(catalog: Scenario) -> None:
    page = read(catalog.report)
    states = {card.id: card.state for card in page.cards.values()}
    assert states == {**{i: "succeeded" for i in SUCCEEDED}, **{i: "failed" for i in FAILED},
                      **{i: "unknown" for i in UNKNOWN}}
    assert list(page.cards)[:2] == ["soap-logo", "tote-red"]  # what needs a person first
    refused = page.cards["soap-logo"]
    assert "Your request was rejected by the safety system" in refused.text
    assert "moderation_blocked" in refused.text and "No output" in refused.text
    lost = page.cards["tote-red"]
    assert "may have been billed" in lost.text and "2 attempts" in lost.text
    assert "attempt history" in lost.text
    assert "$0.0" in page.cards["gift-basket"].text  # its cost, from the ledger


def test_prompts_are_escaped_and_chinese_survives(catalog: Scenario) -> None:
    text = catalog.report.read_text(encoding="utf-8")
    assert "Add the &lt;BrandX&gt; logo &amp; the slogan &quot;Just do it&quot;" in text
    assert "<BrandX>" not in text
    assert text.count("<script") == 1  # the page's own
    assert "创建一个包含这两个物品的精美礼品篮" in text
    assert '<meta charset="utf-8">' in text


def test_cards_show_every_input_the_mask_and_every_output(catalog: Scenario) -> None:
    page = read(catalog.report)

    def files(card_id: str) -> list[str]:
        return [target(catalog.report, href).name for _, href in page.cards[card_id].links]

    assert files("gift-basket") == ["incense-kit.png", "soap.png", "incense-kit.edited.png"]
    shirt = page.cards["shirt-navy"].links
    assert [(cls, target(catalog.report, h).name) for cls, h in shirt] == [
        ("frame", "shirt.jpg"), ("chip mask", "shirt-mask.png"), ("frame", "shirt.edited.png")]
    assert files("mug-pair") == ["mug-blue.jpg", "mug-blue.pair-0.png", "mug-blue.pair-1.png"]
    assert files("soap-logo") == ["soap.png"]  # no output: the input and the reason


def test_links_are_relative_and_open_the_full_size_files(catalog: Scenario) -> None:
    page = read(catalog.report)
    assert page.all_links
    for href in page.all_links:
        path = target(catalog.report, href)
        assert path.is_file(), href
        assert catalog.folder in path.parents
        assert "thumbs" not in path.parts  # the link opens the original, not the thumbnail
    outputs = [target(catalog.report, h) for _, h in page.cards["shirt-navy"].links]
    with Image.open(outputs[-1]) as full:
        assert full.size == (1024, 1024)


def test_thumbnails_are_small_files_not_the_originals(catalog: Scenario) -> None:
    page = read(catalog.report)
    thumbs = assets_folder(catalog.report) / "thumbs"
    originals = {p.read_bytes() for p in catalog.folder.rglob("*") if p.suffix in (".png", ".jpg")}
    sources = {target(catalog.report, h) for h in page.all_links}
    assert len(set(page.all_images)) == len(sources)  # one thumbnail per distinct file
    for src in page.all_images:
        path = target(catalog.report, src)
        assert path.parent == thumbs.resolve()
        with Image.open(path) as thumb:
            assert thumb.format == "WEBP"
            assert max(thumb.size) <= THUMB_PX
        assert path.stat().st_size < 8_000
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE  # not mkstemp's 0600: shared
        assert path.read_bytes() not in originals
    assert catalog.report.stat().st_size < 40_000  # nothing inlined


def test_a_report_elsewhere_links_back_with_relative_paths(catalog: Scenario) -> None:
    out = catalog.folder / "review" / "nightly" / "today.html"
    done = catalog.cli("report", catalog.manifest.name, "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = read(out)
    assert all(href.startswith("../../") for href in page.all_links)
    assert all(target(out, href).is_file() for href in page.all_links + page.all_images)
    assert (out.parent / "today" / "thumbs").is_dir()


def test_rerun_reuses_thumbnails_and_replaces_changed_ones(catalog: Scenario,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "again.html"
    write_report(catalog.manifest, out)
    thumbs = assets_folder(out) / "thumbs"
    long_ago = 1_000_000_000
    for thumb in thumbs.iterdir():
        os.utime(thumb, (long_ago, long_ago))
    before = {p.name for p in thumbs.iterdir()}

    write_report(catalog.manifest, out)
    assert {p.name: p.stat().st_mtime for p in thumbs.iterdir()} == dict.fromkeys(before, long_ago)

    changed = catalog.folder / "products" / "soap.png"
    tiny_image(changed, (30, 90, 200), size=64)  # new bytes, size and mtime
    try:
        write_report(catalog.manifest, out)
        after = {p.name for p in thumbs.iterdir()}
        assert len(after - before) == 1 and len(before - after) == 1  # remade, stale one gone
    finally:
        shutil.copy2(ROOT / "jobs" / "products" / "soap.png", changed)


def test_a_report_removes_the_temp_files_an_interrupted_one_left(catalog: Scenario,
                                                                 tmp_path: Path) -> None:
    """Thumbnails are written by write_atomic: its stray temp files from before this
    report go; one just made (another report writing now) stays, and so do other files."""
    out = tmp_path / "again.html"
    thumbs = assets_folder(out) / "thumbs"
    thumbs.mkdir(parents=True)
    stray, fresh, other = (thumbs / n for n in (".imgedit-1-abc0.part", ".imgedit-1-abc1.part",
                                                "notes.txt"))
    for path in (stray, fresh, other):
        path.write_bytes(b"RIFF")
    os.utime(stray, (1_000_000_000, 1_000_000_000))
    os.utime(other, (1_000_000_000, 1_000_000_000))
    write_report(catalog.manifest, out)
    assert not stray.exists() and fresh.exists() and other.exists()
    assert not any(is_temp_name(p.name) for p in thumbs.iterdir() if p != fresh)


def test_report_never_overwrites_the_manifest_or_a_picture(catalog: Scenario) -> None:
    before = catalog.manifest.read_bytes()
    for victim in (catalog.manifest, catalog.folder / "products" / "soap.png"):
        with pytest.raises(InputError, match="choose another file"):
            write_report(catalog.manifest, victim)
    assert catalog.manifest.read_bytes() == before


def test_no_ledger_is_a_clear_input_error(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "version: 1\ntasks: []\n")
    with pytest.raises(InputError, match=r"no ledger at .*job\.ledger\.sqlite.*imgedit run"):
        write_report(manifest)
    done = Cli(tmp_path)("report", "job.yaml")
    assert done.returncode == 2 and "no ledger" in done.stderr
    assert not (tmp_path / "job.report.html").exists()
    assert not (tmp_path / "job.ledger.sqlite").exists()


def test_missing_and_unreadable_files_and_earlier_results(tmp_path: Path) -> None:
    """Built with the Ledger API: cases a clean run does not produce."""
    good = tiny_image(tmp_path / "in" / "good.png")
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not an image")
    gone = tmp_path / "out" / "gone.png"  # recorded as an output, deleted since
    earlier = tiny_image(tmp_path / "out" / "earlier.png", (0, 120, 0))
    manifest = write_manifest(tmp_path, "version: 1\ntasks: []\n")
    where = Location(manifest, 1)

    def task(task_id: str, image: Path) -> Task:
        return Task(task_id, (image,), f"<script>alert('{task_id}')</script>", where, tmp_path,
                    fields={"model": "gpt-image-1"})

    with Ledger.open(tmp_path / "job.ledger.sqlite") as book:
        run = book.start_run(manifest, {})
        for t in (task("a-gone", good), task("b-broken", broken), task("c-again", good)):
            book.mark_submitted(run, t, "fp-" + t.id)
        book.mark_succeeded("a-gone", "fp-a-gone", [gone], tmp_path / "out" / "gone.json",
                            usage=None, cost=0.01, request_id="req_1")
        book.record_attempt(Attempt(task_id="b-broken", run_id=run, started_at=0.0,
                                    outcome=Outcome.FAILED, status=400, error_code="bad_image",
                                    message="that is no image"))
        book.mark_failed("b-broken", "fp-b-broken", terminal=True, reason="that is no image",
                         error_type="invalid_request_error", error_code="bad_image")
        book.mark_succeeded("c-again", "fp-c-again", [earlier], tmp_path / "out" / "e.json",
                            usage=None, cost=0.01, request_id="req_2")
        book.mark_failed("c-again", "fp-c-again-2", terminal=False, reason="HTTP 503 overloaded",
                         error_type="server_error", error_code="overloaded")

    report = write_report(manifest)
    page = read(report)
    text = report.read_text(encoding="utf-8")
    assert "<script>alert" not in text and text.count("<script") == 1
    assert "&lt;script&gt;alert(&#x27;b-broken&#x27;)&lt;/script&gt;" in text
    assert "file missing" in page.cards["a-gone"].text
    assert "unreadable" in page.cards["b-broken"].text
    assert "bad_image" in page.cards["b-broken"].text
    again = page.cards["c-again"]
    assert "Earlier result" in again.text and "Retried on the next run" in again.text
    # good.png (one thumbnail, shown twice) and earlier.png; no <img> for the other two
    assert len(page.all_images) == 3 and len(set(page.all_images)) == 2
    with sqlite3.connect(tmp_path / "job.ledger.sqlite") as db:  # the report changed nothing
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone() == (3,)


# --- the real browser -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium.find()
    if binary is None:
        message = "Chromium not found (Debian: apt-get install chromium; or set CHROMIUM=path)"
        if os.environ.get("IMGEDIT_REQUIRE_CHROMIUM"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def test_report_works_in_chromium(catalog: Scenario, browser: str, tmp_path: Path) -> None:
    seen = chromium.selftest(browser, catalog.report, tmp_path / "profile", search="tote-green")
    expected_images = len(read(catalog.report).all_images)
    assert seen["images"] == expected_images > 10
    assert seen["broken"] == []  # every thumbnail loaded: naturalWidth > 0
    assert set(seen["failed"]) == FAILED and len(seen["failed"]) == len(FAILED)
    assert set(seen["succeeded"]) == SUCCEEDED
    assert set(seen["all"]) == SUCCEEDED | FAILED | UNKNOWN
    assert seen["search"] == ["catalog/bags/tote-green.jpg"]
    assert seen["shown"] == "1 of 8 shown"


def test_report_screenshot(catalog: Scenario, browser: str, tmp_path: Path) -> None:
    shot = chromium.screenshot(browser, catalog.report, tmp_path / "shot.png",
                               tmp_path / "profile")
    small = optimise(shot, tmp_path / "report.png")
    with Image.open(small) as image:
        assert image.size == (1200, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50  # pictures were drawn, not a blank page
    assert small.stat().st_size < 200_000
    if os.environ.get("IMGEDIT_SCREENSHOT"):
        shutil.copyfile(small, ROOT / os.environ["IMGEDIT_SCREENSHOT"])


def optimise(png: Path, out: Path) -> Path:
    """A 256-colour PNG: the README's screenshot stays small in git."""
    with Image.open(png) as image:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
    return out

