"""The report shows review decisions and groups results by source image.

A real run against the simulator (two models on one photo, one refused task),
decisions written as the review page writes them, then `python -m pipeline report`,
read back as HTML and opened in headless Chromium.
"""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.ledger.reviews import Reviews
from pipeline.ledger.store import Ledger
from pipeline.simulator.app import SimulatorOptions, SimulatorThread
from tests.browser import chromium
from tests.conftest import ROOT, TEST_KEY, Cli, write_manifest

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
      - glob: "catalog/mugs/*.jpg"
        prompt: Put the product on white
"""


class Seen(HTMLParser):
    """Each card's data-decision and badges, and each group's cards and heading."""

    def __init__(self, text: str):
        super().__init__()
        self.decision: dict[str, str] = {}
        self.badges: dict[str, list[str]] = {}
        self.groups: list[list[str]] = []
        self.headings: list[str] = []
        self.filters: list[str] = []
        self._card = ""
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._in.append(tag)
        if tag == "section" and "group" in a.get("class", ""):
            self.groups.append([])
        elif tag == "article":
            self._card = a["data-id"]
            self.decision[self._card] = a["data-decision"]
            self.badges[self._card] = []
            if "section" in self._in[:-1]:
                self.groups[-1].append(self._card)
        elif tag == "span" and self._card and a.get("class", "").startswith("badge"):
            self.badges[self._card].append(a["class"].split()[1])
        elif tag == "button":
            self.filters.append(a["data-filter"])
        elif tag == "h2":
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        while self._in and self._in.pop() != tag:
            pass
        if tag == "article":
            self._card = ""

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] in ("h2", "span") and "h2" in self._in:
            self.headings[-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reviewed")
    for sub in ("products", "catalog"):
        shutil.copytree(ROOT / "jobs" / sub, folder / sub,
                        ignore=shutil.ignore_patterns("*.edited.*"))
    write_manifest(folder, MANIFEST)
    cli = Cli(folder)
    options = SimulatorOptions.from_mapping({"fault_by_prompt": {"slogan": "moderation"},
                                             "api_key": TEST_KEY})
    with SimulatorThread(options) as sim:
        assert cli("run", "job.yaml", "--base-url", sim.base_url, "--quiet").returncode == 1
    with Ledger.open(folder / "job.ledger.sqlite") as book:
        reviews = Reviews(book)
        reviews.decide("shirt-full", "approved")
        reviews.decide("shirt-mini", "rejected", "collar <still> red")
        reviews.decide("catalog/mugs/mug-blue.jpg", "approved")
    done = cli("report", "job.yaml")
    assert done.returncode == 0, done.stderr
    return folder / "job.report.html"


def test_cards_carry_the_decision_and_a_badge(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    seen = Seen(text)
    assert seen.decision == {"shirt-full": "approved", "shirt-mini": "rejected", "soap": "",
                             "catalog/mugs/mug-blue.jpg": "approved",
                             "catalog/mugs/mug-yellow.jpg": "unreviewed"}
    assert seen.badges["shirt-mini"] == ["succeeded", "rejected"]
    assert seen.badges["shirt-full"] == ["succeeded", "approved"]
    assert seen.badges["soap"] == ["failed"]
    assert "<b>Rejected:</b> collar &lt;still&gt; red" in text  # the note, escaped
    assert seen.filters[-3:] == ["approved", "rejected", "unreviewed"]
    assert "imgedit run job.yaml --redo-rejected" in text


def test_results_of_one_photo_sit_together_with_their_costs(report: Path) -> None:
    seen = Seen(report.read_text(encoding="utf-8"))
    assert [sorted(g) for g in seen.groups] == [["shirt-full", "shirt-mini"]]
    assert seen.headings[0].startswith("products/shirt.jpg 2 results · $0.0")


def test_the_decision_filter_works_in_chromium(report: Path, tmp_path: Path) -> None:
    binary = chromium.find()
    if binary is None:
        if os.environ.get("IMGEDIT_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium not found")
        pytest.skip("Chromium not found (Debian: apt-get install chromium)")
    seen = chromium.selftest(binary, report, tmp_path / "profile")
    assert seen["rejected"] == ["shirt-mini"]
    assert seen["groups"] == {"failed": 0, "rejected": 1}  # a group hides with its cards
    assert seen["broken"] == []
