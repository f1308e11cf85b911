"""The review report (`imgedit report`): every task of the ledger as a card on one HTML page.

Owns reading the ledger and the sidecars into cards and rendering them into one
static, self-contained file: inline CSS and JS (report_template.html), filters
and search that work from disk with no server, and small thumbnails
(thumbnails.py) in a folder beside the page, each linking by a relative path to
the full-size image.

It must never change the ledger (it opens it without the run lock, so it can run
beside a live run and never relabels in-flight tasks), never inline a full-size
image, never load anything from the network, and never put user text on the page
unescaped: prompts, ids, reasons and paths all go through `html.escape`.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.errors import InputError
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.durable import write_atomic
from pipeline.ledger.reviews import Decision, Review, Reviews
from pipeline.ledger.store import Attempt, Ledger, TaskRecord
from pipeline.task import State
from pipeline.views.status import simulated_spend
from pipeline.views.thumbnails import Thumbnails

LABELS = {
    State.SUCCEEDED: "Succeeded", State.FAILED: "Failed", State.UNKNOWN: "Unknown",
    State.SUBMITTED: "In flight", State.PENDING: "Pending",
}
# What needs a person comes first: failures, then possible double charges, then the rest.
FIRST = {State.FAILED: 0, State.UNKNOWN: 1, State.SUBMITTED: 2, State.PENDING: 3,
         State.SUCCEEDED: 4}
ALWAYS_FILTERED = (State.SUCCEEDED, State.FAILED)  # other states get a filter when present
UNREVIEWED = "unreviewed"  # a result nobody has approved or rejected yet
MESSAGE_CHARS = 300  # an attempt's error message, cut to keep a 5,000-task page small


def default_output(manifest: Path) -> Path:
    """`<manifest folder>/<manifest stem>.report.html`."""
    return manifest.with_name(f"{manifest.stem}.report.html")


def assets_folder(output: Path) -> Path:
    """The page's own folder beside it: `job.report.html` → `job.report/`."""
    return output.with_name(output.stem if output.suffix else f"{output.name}_files")


def write_report(manifest: Path, output: Path | None = None, ledger: Path | None = None, *,
                 config: str | None = None) -> Path:
    """Write the report of `manifest`'s ledger (and its thumbnails); returns the page's path.
    `config` names the providers that are simulators: their money is said to be simulated."""
    manifest = manifest.resolve()
    output = (output or default_output(manifest)).resolve()
    ledger_path = (ledger or ledger_mod.default_path(manifest)).resolve()
    if not ledger_path.exists():
        raise InputError(
            f"no ledger at {ledger_path}: nothing to report yet."
            f" `imgedit run {manifest}` creates it (or pass --ledger PATH)")
    with Ledger.open(ledger_path) as book:
        decisions = Reviews(book).current()
        cards = [dataclasses.replace(card_of(record, book, manifest.parent),
                                     review=decisions.get(record.id))
                 for record in book.records()]
        counts, spent = book.counts(), book.spent()
        rehearsal = simulated_spend(book, config)
    cards.sort(key=lambda card: FIRST[card.record.state])  # stable: by id within a state
    _refuse_overwrite(output, manifest, ledger_path, cards)
    thumbs = Thumbnails(assets_folder(output) / "thumbs")
    names = thumbs.ensure(path for card in cards for path in card.images)
    page = _Page(output.parent, thumbs.folder, names, manifest.parent)
    body = _render(manifest, cards, counts, spent, page, rehearsal)
    # "replace": a file name that is not UTF-8 shows as "?" (its link is percent-encoded).
    write_atomic(output, body.encode("utf-8", "replace"))
    return output


def _refuse_overwrite(output: Path, manifest: Path, ledger: Path, cards: list[Card]) -> None:
    precious = {manifest, ledger} | {p.resolve() for card in cards for p in card.images}
    if output in precious:
        raise InputError(f"-o {output}: that is the manifest, the ledger or an image the"
                         " report shows; choose another file (default: <stem>.report.html)")


# --- cards: what the ledger and the sidecars say about each task ---------------------------

@dataclass(frozen=True)
class Card:
    record: TaskRecord
    inputs: list[Path]
    mask: Path | None
    request: dict[str, Any]  # the request fields the sidecar saved (size, quality, ...)
    tries: list[Attempt]  # attempt history, kept only where it tells something
    review: Review | None = None  # a reviewer's decision about this result (imgedit review)

    @property
    def images(self) -> list[Path]:
        return [*self.inputs, *([self.mask] if self.mask else []), *self.record.outputs]


def card_of(record: TaskRecord, book: Ledger, root: Path) -> Card:
    # The tasks table keeps only the first input; the sidecar of a success has them all.
    side = _read_json(record.sidecar)
    inputs = [_path(p, root) for p in side.get("inputs") or [] if isinstance(p, str)]
    if not inputs and record.first_input:
        inputs = [_path(str(record.first_input), root)]
    mask = side.get("mask")
    request = side.get("request")
    tries = book.attempts(record.id) if record.attempts > 1 else []  # one: the reason says it
    return Card(record, inputs, _path(mask, root) if isinstance(mask, str) else None,
                request if isinstance(request, dict) else {}, tries)


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _path(value: str, root: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


# --- rendering ----------------------------------------------------------------------------

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


class _Page:
    """Links and thumbnails, relative to the page's folder."""

    def __init__(self, folder: Path, thumbs: Path, names: dict[Path, str], root: Path):
        self.folder = folder
        self.root = root  # the manifest's folder: source names are shown relative to it
        self.thumbs = self.href(thumbs) + "/"
        self.names = names

    def href(self, path: Path) -> str:
        try:
            relative = os.path.relpath(path, self.folder).replace(os.sep, "/")
        except ValueError:  # another drive (Windows): no relative path exists
            return _e(path.resolve().as_uri())
        return _e(quote(relative, safe="/", errors="surrogateescape"))

    def image(self, path: Path, cls: str, label: str) -> str:
        name = self.names.get(path)
        if name is None:
            why = "unreadable" if path.exists() else "file missing"
            inner = f'<span class="gone">{why}</span>'
        else:
            inner = f'<img loading="lazy" src="{self.thumbs}{_e(name)}" alt="{_e(label)}">'
        return f'<a class="{cls}" href="{self.href(path)}">{inner}</a>'

    def side(self, label: str, main: Path, chips: list[tuple[Path, str]]) -> str:
        small = "".join(self.image(path, f"chip {kind}", kind) for path, kind in chips)
        return (f'<div class="side"><div class="label">{_e(label)}</div>'
                f'{self.image(main, "frame", label)}'
                + (f'<div class="chips">{small}</div>' if small else "") + "</div>")


def _before(card: Card, page: _Page) -> str:
    if not card.inputs:
        return ('<div class="side"><div class="label">Before</div>'
                '<div class="none wait">?</div></div>')
    label = "Before" if len(card.inputs) == 1 else f"{len(card.inputs)} inputs"
    chips = [(path, "input") for path in card.inputs[1:]]
    if card.mask:
        chips.append((card.mask, "mask"))
    return page.side(label, card.inputs[0], chips)


def _after(card: Card, page: _Page) -> str:
    record = card.record
    outputs = record.outputs
    if outputs:
        label = "After" if len(outputs) == 1 else f"{len(outputs)} outputs"
        if record.state is not State.SUCCEEDED:
            label = "Earlier result"
        return page.side(label, outputs[0], [(path, "output") for path in outputs[1:]])
    if record.state is State.FAILED:
        empty = '<div class="none"><b>✕</b>No output</div>'
    elif record.state is State.UNKNOWN:
        empty = '<div class="none wait"><b>?</b>No answer</div>'
    else:
        empty = '<div class="none wait"><b>…</b>Not yet</div>'
    return f'<div class="side"><div class="label">After</div>{empty}</div>'


def _reason(record: TaskRecord) -> str:
    if record.state not in (State.FAILED, State.UNKNOWN):
        return ""
    code = record.error_code or record.error_type
    reason = record.reason or "no reason recorded"
    head = f'<span class="code">{_e(code)}</span> · ' if code and code not in reason else ""
    if record.state is State.UNKNOWN:
        what_next = "No answer came: it may have been billed. Retried on the next run."
    elif record.terminal:
        what_next = ("Final: a plain run skips it until its prompt or inputs change;"
                     " --only-failed or --retry-failed sends it again.")
    else:
        what_next = "Retried on the next run."
    cls = "reason unknown" if record.state is State.UNKNOWN else "reason"
    return f'<p class="{cls}">{head}{_e(reason)}<span class="next">{what_next}</span></p>'


def _tries(card: Card) -> str:
    if not card.tries:
        return ""
    items = []
    for t in card.tries:
        parts = [f"#{t.number}", str(t.status or "no answer")]
        if t.error_code or t.error_type:
            parts.append(str(t.error_code or t.error_type))
        if t.latency_s is not None:
            parts.append(f"{t.latency_s:.1f} s")
        parts.append(str(t.outcome))
        message = f" — {_cut(t.message)}" if t.message else ""
        items.append(f"<li>{_e(' · '.join(parts) + message)}</li>")
    return (f'<details class="tries"><summary>attempt history</summary>'
            f'<ol>{"".join(items)}</ol></details>')


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _money(value: float, digits: int = 3) -> str:
    return f"${value:,.{digits}f}"


def _card_html(card: Card, page: _Page) -> str:
    record = card.record
    state = record.state.value
    head = (f'<div class="head"><span class="badge {state}">{LABELS[record.state]}</span>'
            f'{_review_badge(card.review)}<span class="tid">{_e(record.id)}</span></div>')
    pair = (f'<div class="pair">{_before(card, page)}<span class="arrow">→</span>'
            f"{_after(card, page)}</div>")
    prompt = f'<p class="prompt">{_e(record.prompt)}</p>' if record.prompt else ""
    # The ledger's cost is that of the last success: on a card that failed since, it misleads.
    paid = record.cost is not None and record.state is State.SUCCEEDED
    meta = f'<span class="cost">{_money(record.cost or 0)}</span>' if paid else ""
    facts = [record.model or card.request.get("model"), card.request.get("size"),
             card.request.get("quality"),
             f"{record.attempts} attempt{'' if record.attempts == 1 else 's'}"]
    meta += "".join(f"<span>{_e(f)}</span>" for f in facts if f)
    note = card.review.note if card.review else None
    noted = f'<p class="verdict"><b>Rejected:</b> {_e(note)}</p>' if note else ""
    return (f'<article class="card {state}" data-state="{state}" data-id="{_e(record.id)}"'
            f' data-decision="{_decision(card)}">'
            f'{head}{pair}{prompt}{_reason(record)}{noted}<div class="meta">{meta}</div>'
            f"{_tries(card)}</article>")


def _decision(card: Card) -> str:
    """approved / rejected / unreviewed (a result nobody judged yet) / "" (no result)."""
    if card.review:
        return card.review.decision.value
    return UNREVIEWED if card.record.state is State.SUCCEEDED else ""


def _review_badge(review: Review | None) -> str:
    if review is None:
        return ""
    label = "✓ Approved" if review.decision is Decision.APPROVED else "✕ Rejected"
    return f'<span class="badge {review.decision.value}">{label}</span>'


def _header(manifest: Path, cards: list[Card], counts: dict[str, int], spent: float,
            rehearsal: bool = False) -> str:
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    top = (f'<div class="top"><h1 title="{_e(manifest)}">{_e(manifest.name)}</h1>'
           f'<span class="sub"><b>{len(cards):,}</b> tasks · '
           f'{"simulated" if rehearsal else "spent"} <b>{_money(spent, 2)}</b>'
           f" · generated {when}</span></div>")
    buttons = [f'<button class="filter all" data-filter="all" aria-pressed="true">'
               f'All <span class="n">{len(cards):,}</span></button>']
    for state in State:
        count = counts.get(state.value, 0)
        if count or state in ALWAYS_FILTERED:
            hot = " hot" if state is State.FAILED and count else ""
            buttons.append(
                f'<button class="filter {state.value}{hot}" data-filter="{state.value}"'
                f' aria-pressed="false"><span class="dot"></span>{LABELS[state]}'
                f' <span class="n">{count:,}</span></button>')
    buttons += _decision_buttons(cards)
    search = ('<input id="q" type="search" placeholder="Search task id…" autocomplete="off"'
              ' aria-label="Search by task id"><span id="shown"></span>')
    bar = f'<div class="bar">{"".join(buttons)}{search}</div>'
    hint = ""
    if counts.get(State.FAILED.value) or counts.get(State.UNKNOWN.value):
        hint = (f'<p class="hint">Reprocess the failures: '
                f"<code>imgedit run {_e(manifest.name)} --only-failed</code></p>")
    if any(card.review and card.review.decision is Decision.REJECTED for card in cards):
        hint += (f'<p class="hint">Send the rejected again: '
                 f"<code>imgedit run {_e(manifest.name)} --redo-rejected</code></p>")
    return top + bar + hint


def _decision_buttons(cards: list[Card]) -> list[str]:
    """Approved / Rejected / To review, once anyone reviewed anything (`imgedit review`)."""
    if not any(card.review for card in cards):
        return []
    found = Counter(_decision(card) for card in cards)
    return [f'<button class="filter {value}" data-filter="{value}" aria-pressed="false">'
            f'{label} <span class="n">{found[value]:,}</span></button>'
            for value, label in (("approved", "✓ Approved"), ("rejected", "✕ Rejected"),
                                 (UNREVIEWED, "To review"))]


def _groups(cards: list[Card], page: _Page) -> str:
    """Cards in order; those that share a source image (the same photo through several
    models or prompts) sit together where the first of them falls, with each one's cost."""
    by_source: dict[Path, list[Card]] = {}
    for card in cards:
        if card.inputs:
            by_source.setdefault(card.inputs[0], []).append(card)
    parts, placed = [], set()
    for card in cards:
        members = by_source.get(card.inputs[0], []) if card.inputs else []
        if len(members) < 2:
            parts.append(_card_html(card, page))
        elif card.inputs[0] not in placed:
            placed.add(card.inputs[0])
            cost = sum(c.record.cost or 0 for c in members if c.record.state is State.SUCCEEDED)
            name = os.path.relpath(card.inputs[0], page.root)
            parts.append(f'<section class="group"><h2><span class="src">{_e(name)}</span>'
                         f' {len(members)} results · {_money(cost)}</h2>'
                         + "".join(_card_html(c, page) for c in members) + "</section>")
    return "\n".join(parts)


def _render(manifest: Path, cards: list[Card], counts: dict[str, int], spent: float,
            page: _Page, rehearsal: bool = False) -> str:
    values = {
        "title": _e(f"{manifest.name} · imgedit report"),
        "header": _header(manifest, cards, counts, spent, rehearsal),
        "cards": _groups(cards, page),
    }
    # One pass: text inserted for one placeholder is never scanned for another.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], _template())


@functools.cache
def _template() -> str:
    return resources.files("pipeline.views").joinpath("report_template.html").read_text("utf-8")
