"""`imgedit review`: a local page to approve or reject each result, by keyboard.

Owns the little web server: an aiohttp app bound to 127.0.0.1 only, every URL
under a random token (`/<token>/...`; anything else, or any caller that is not
this machine, gets 403), the page (review_template.html with review.css and
review.js beside it), a small JSON API
(`api/results`, `api/decide`, `api/undo`) and the pictures.

It serves only the files the ledger and the sidecars name for this manifest:
each gets an opaque key, and a key is all a request can ask for, so no path from
the browser ever reaches the file system. It never changes a task's state:
decisions go to the ledger's reviews table (ledger/reviews.py) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import html
import os
import secrets
import signal
import sys
import tempfile
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.errors import InputError
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.reviews import Decision, Reviews
from pipeline.ledger.store import Ledger
from pipeline.task import State
from pipeline.views.report import card_of
from pipeline.views.status import simulated_spend
from pipeline.views.thumbnails import make_thumbnail

HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "::1"}
THUMB_PX, VIEW_PX = 240, 1600  # grid tiles; the large before/after view
MAX_BODY = 64 * 1024  # a decision is an id and a note
# The page's own style and script, beside its template (package data), served from memory.
ASSETS = {"review.css": "text/css", "review.js": "text/javascript"}
# Only pictures are served, whatever a hand-edited sidecar names.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff"}


@dataclass
class Session:
    """One review session: the manifest, its ledger, the token and the files it may serve."""

    manifest: Path
    ledger: Ledger
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    previews: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="imgedit-review-")))
    files: dict[str, Path] = field(default_factory=dict)  # key → a path the ledger names
    simulated: bool = False  # every paid run was a rehearsal: its costs are simulated

    def key(self, path: Path) -> str:
        key = hashlib.sha256(os.fsencode(path)).hexdigest()[:24]
        self.files[key] = path
        return key

    def results(self) -> dict[str, Any]:
        """Every task as the page shows it, grouped by source image (its first input)."""
        root = self.manifest.parent
        decisions = Reviews(self.ledger).current()
        items = []
        for record in self.ledger.records():
            card = card_of(record, self.ledger, root)
            decision = decisions.get(record.id)
            items.append({
                "id": record.id, "state": record.state.value, "model": record.model,
                "prompt": record.prompt, "reason": record.reason, "attempts": record.attempts,
                "cost": record.cost if record.state is State.SUCCEEDED else None,
                "source": _relative(card.inputs[0], root) if card.inputs else "",
                "inputs": [self._picture(p, root) for p in card.inputs],
                "mask": self._picture(card.mask, root) if card.mask else None,
                "outputs": [self._picture(p, root) for p in record.outputs],
                "size": card.request.get("size"), "quality": card.request.get("quality"),
                **({"decision": None, "note": None} if decision is None else
                   {"decision": decision.decision.value, "note": decision.note}),
            })
        # Tasks that share a source sit together (the same photo through several models).
        items.sort(key=lambda item: (item["source"], item["model"] or "", item["id"]))
        return {"manifest": self.manifest.name, "simulated": self.simulated, "items": items}

    def _picture(self, path: Path, root: Path) -> dict[str, Any]:
        return {"key": self.key(path), "name": _relative(path, root), "exists": path.exists()}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- the app -------------------------------------------------------------------------------

def make_app(review: Session) -> web.Application:
    app = web.Application(middlewares=[_guard(review.token)], client_max_size=MAX_BODY)
    prefix = f"/{review.token}"
    app.router.add_get(prefix + "/", functools.partial(_page, review))
    for name, kind in ASSETS.items():
        app.router.add_get(f"{prefix}/{name}", functools.partial(_asset, name, kind))
    app.router.add_get(prefix + "/api/results", functools.partial(_results, review))
    app.router.add_post(prefix + "/api/decide", functools.partial(_decide, review))
    app.router.add_post(prefix + "/api/undo", functools.partial(_undo, review))
    app.router.add_get(prefix + "/file/{key}", functools.partial(_file, review))
    app.router.add_get(prefix + "/thumb/{key}", functools.partial(_preview, review, THUMB_PX))
    app.router.add_get(prefix + "/view/{key}", functools.partial(_preview, review, VIEW_PX))
    return app


def _guard(token: str) -> Any:
    """403 for any caller not on this machine and any path not under the token."""
    expected = f"/{token}/".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        given = request.path.encode()[: len(expected)]
        if request.remote not in LOOPBACK or not hmac.compare_digest(given, expected):
            raise web.HTTPForbidden(text="imgedit review: open the URL `imgedit review` printed")
        response: web.StreamResponse = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return guard


async def _page(review: Session, request: web.Request) -> web.Response:
    title = html.escape(f"{review.manifest.name} · imgedit review")
    body = _packaged("review_template.html").replace("{{title}}", title)
    return web.Response(text=body, content_type="text/html")


async def _asset(name: str, kind: str, request: web.Request) -> web.Response:
    return web.Response(text=_packaged(name), content_type=kind)


async def _results(review: Session, request: web.Request) -> web.Response:
    return web.json_response(review.results())


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise web.HTTPBadRequest(text='expected {"id": "...", ...}')
    return data


async def _decide(review: Session, request: web.Request) -> web.Response:
    data = await _body(request)
    note = data.get("note")
    if data.get("decision") not in set(Decision) or not (note is None or isinstance(note, str)):
        raise web.HTTPBadRequest(text='decision: "approved" or "rejected"; note: text')
    try:
        made = Reviews(review.ledger).decide(data["id"], data["decision"], note)
    except InputError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    return web.json_response({"id": made.task_id, **made.as_dict()})


async def _undo(review: Session, request: web.Request) -> web.Response:
    data = await _body(request)
    now = Reviews(review.ledger).undo(data["id"])
    empty = {"decision": None, "note": None, "decided_at": None}
    return web.json_response({"id": data["id"], **(now.as_dict() if now else empty)})


def _known(review: Session, request: web.Request) -> Path:
    path = review.files.get(request.match_info["key"])
    if path is None or path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
        raise web.HTTPNotFound()
    return path


async def _file(review: Session, request: web.Request) -> web.FileResponse:
    path = _known(review, request)
    return web.FileResponse(path, headers={"Content-Type": IMAGE_TYPES[path.suffix.lower()]})


async def _preview(review: Session, px: int, request: web.Request) -> web.FileResponse:
    """A WEBP of at most `px` a side, made once per file and size in the session's folder."""
    path = _known(review, request)
    stat = path.stat()
    target = review.previews / f"{request.match_info['key']}-{px}-{stat.st_mtime_ns}.webp"
    if not target.exists():
        made = await asyncio.to_thread(make_thumbnail, path, target, px)
        if not made:
            raise web.HTTPNotFound(text="this image cannot be read")
    return web.FileResponse(target, headers={"Content-Type": "image/webp"})


@functools.cache
def _packaged(name: str) -> str:
    return resources.files("pipeline.views").joinpath(name).read_text("utf-8")


# --- the command ---------------------------------------------------------------------------

def open_review(manifest: Path, ledger: Path | None, config: str | None = None) -> Session:
    """`config` names the providers that are simulators: their costs are said to be simulated."""
    manifest = manifest.resolve()
    path = (ledger or ledger_mod.default_path(manifest)).resolve()
    if not path.exists():
        raise InputError(f"no ledger at {path}: nothing to review yet."
                         f" `imgedit run {manifest}` creates it (or pass --ledger PATH)")
    # recover=False: a run may be live beside the page; its in-flight tasks stay as they are.
    book = Ledger.open(path, recover=False)
    return Session(manifest, book, simulated=simulated_spend(book, config))


def serve(review: Session, port: int, *, browser: bool, out: Callable[[str], None]) -> int:
    """Serve until Ctrl-C or SIGTERM; prints the URL (and opens it where a browser is)."""
    try:
        asyncio.run(_serve(review, port, browser, out))
    finally:
        review.ledger.close()
        for entry in review.previews.iterdir():
            entry.unlink(missing_ok=True)
        review.previews.rmdir()
    return 0


async def _serve(review: Session, port: int, browser: bool, out: Callable[[str], None]) -> None:
    runner = web.AppRunner(make_app(review), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InputError(f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror})") from exc
    bound = runner.addresses[0][1]
    url = f"http://{HOST}:{bound}/{review.token}/"
    out(f"review: {url}\n(Ctrl-C to stop; decisions are saved as you make them)")
    if browser:
        _open_browser(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _open_browser(url: str) -> None:
    """Open the page where a graphical browser can be: never a console browser that would
    take the terminal, never a failure."""
    graphical = sys.platform in ("darwin", "win32") or any(
        os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY"))
    if not graphical:
        return
    # A browser that cannot start must not stop the review: the URL is printed.
    with contextlib.suppress(Exception):
        webbrowser.open(url, new=2)

