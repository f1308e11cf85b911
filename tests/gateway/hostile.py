"""A hostile gateway on loopback: every answer issue 11 found to break a run, on demand.

Not the simulator (which copies the relay): a small aiohttp app that answers a
task by the `[case]` tag in its prompt — nested 10,000 deep, wrong types, 100
images for one, GIF/TIFF/BMP/SVG, a pixel bomb, a 307, file:// and private
URLs, an http downgrade, a key echoed back, a 20 MB message, terminal escapes.

It speaks https (a throwaway CA from trustme; a child process trusts it through
SSL_CERT_FILE) on 127.0.0.1, reached as https://localhost:PORT/v1, beside:
- a "CDN": another https server on 127.0.0.1 (a different origin, the same machine),
- a plain http server on 127.0.0.1, which must never be reached (downgrades, the
  POST's redirect target).
Every server records the headers each path received. The gateway answers 401
unless Authorization is exactly `Bearer <key>`, and counts, per Idempotency-Key,
the 200 answers it gave: what a real gateway would bill.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import ssl
import struct
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from PIL import Image

MB = 1024 * 1024


def png(size: tuple[int, int] = (16, 16), color: tuple[int, int, int] = (20, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def encoded(fmt: str) -> bytes:
    if fmt == "SVG":
        return b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"></svg>'
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, fmt)
    return out.getvalue()


def pixel_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header says width x height, with a few bytes of data: a decompression
    bomb by its header (made by hand: Pillow would need gigabytes to write a real one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width // 8) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Seen:
    """What the servers received."""

    headers: dict[str, list[dict[str, str]]] = field(default_factory=lambda: defaultdict(list))
    billed: Counter[str] = field(default_factory=Counter)  # Idempotency-Key -> 200 answers
    requests: Counter[str] = field(default_factory=Counter)  # case -> POSTs
    plain_hits: int = 0  # requests that reached the http server

    @property
    def billed_twice(self) -> int:
        return sum(count - 1 for count in self.billed.values() if count > 1)


class Hostile:
    """`with Hostile(key) as gw:` serves until the block ends; gw.base_url, gw.seen."""

    def __init__(self, key: str, *, extra_header: tuple[str, str] = ("X-Org", "org-secret")):
        self.key = key
        self.extra_header = extra_header
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.seen = Seen()
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    # --- what a test needs ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.ports['gw']}/v1"

    def cdn(self, path: str) -> str:
        return f"https://127.0.0.1:{self.ports['cdn']}{path}"

    def own(self, path: str) -> str:
        return f"https://localhost:{self.ports['gw']}{path}"

    def plain(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['plain']}{path}"

    def write_ca(self, path: Path) -> Path:
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def client_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def __enter__(self) -> Hostile:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the hostile gateway did not start within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # --- the servers ------------------------------------------------------------------
    async def _serve(self) -> None:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(server_ssl)
        gw, cdn, plain = web.Application(), web.Application(), web.Application()
        gw.router.add_post("/v1/images/edits", self._edits)
        gw.router.add_get("/files/{name}", self._file)
        cdn.router.add_get("/files/{name}", self._file)
        plain.router.add_route("*", "/{tail:.*}", self._plain)
        runners = []
        for name, app, context in (("gw", gw, server_ssl), ("cdn", cdn, server_ssl),
                                   ("plain", plain, None)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
            self.ports[name] = runner.addresses[0][1]
            runners.append(runner)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()

    async def _plain(self, request: web.Request) -> web.Response:
        self.seen.plain_hits += 1
        self.seen.headers[f"plain{request.path}"].append(dict(request.headers))
        return web.Response(body=png(), content_type="image/png")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        where = "gw" if request.url.port == self.ports["gw"] else "cdn"
        self.seen.headers[f"{where}/files/{name}"].append(dict(request.headers))
        if name == "to-cdn.png":  # our own origin sends the client on to the CDN
            raise web.HTTPFound(self.cdn("/files/ok.png"))
        if name == "to-plain.png":
            raise web.HTTPFound(self.plain("/files/ok.png"))
        if name == "huge.png":  # a few MB past a lowered cap, streamed, no length declared
            response = web.StreamResponse()
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):  # the client hangs up at its cap
                await response.write(png())
                for _ in range(8):
                    await response.write(b"\x00" * MB)
            return response
        return web.Response(body=png(), content_type="image/png")

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "Invalid token",
                                                "type": "new_api_error"}}, status=401)
        form = await request.post()
        prompt = str(form.get("prompt", ""))
        case = prompt.partition("[")[2].partition("]")[0] or "ok"
        self.seen.requests[case] += 1
        answer = CASES.get(case, CASES["ok"])(self, request)
        if isinstance(answer, web.StreamResponse):
            response = answer
        else:
            response = web.Response(body=answer if isinstance(answer, bytes)
                                    else json.dumps(answer).encode(),
                                    content_type="application/json")
        if response.status == 200:
            self.seen.billed[request.headers.get("Idempotency-Key", "")] += 1
        return response


Answer = Callable[[Hostile, web.Request], Any]


def _images(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"created": 1, "data": list(items), **extra}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                        "code": "bad"}}, status=status)


def _declared_huge(_: Hostile, __: web.Request) -> web.StreamResponse:
    # Says 400 MB of b64_json is coming: refused by its Content-Length, nothing read.
    return web.Response(body=b'{"data": [{"b64_json": "AAAA"}]}', status=200,
                        headers={"Content-Length": str(400 * MB)})


CASES: dict[str, Answer] = {
    "ok": lambda gw, r: _images({"b64_json": b64(png())},
                                usage={"input_tokens": 50, "output_tokens": 100}),
    "ok-url-own": lambda gw, r: _images({"url": gw.own("/files/ok.png")}),
    "ok-url-cdn": lambda gw, r: _images({"url": gw.cdn("/files/ok.png")}),
    "ok-redirect": lambda gw, r: _images({"url": gw.own("/files/to-cdn.png")}),
    # item 2: types and nesting
    "deep": lambda gw, r: b'{"data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "data-str": lambda gw, r: _images("x"),
    "b64-int": lambda gw, r: _images({"b64_json": 123}),
    "url-int": lambda gw, r: _images({"url": 5}),
    "usage-lol": lambda gw, r: _images({"b64_json": b64(png())}, usage="lol"),
    "usage-nan": lambda gw, r: (
        b'{"data": [{"b64_json": "' + b64(png()).encode()
        + b'"}], "usage": {"input_tokens": NaN, "output_tokens": -100000000}}'),
    # item 3: more images than asked
    "hundred": lambda gw, r: _images(*[{"b64_json": b64(png(color=(i, 0, 0)))}
                                       for i in range(100)]),
    # item 5: size
    "huge-url": lambda gw, r: _images({"url": gw.own("/files/huge.png")}),
    "huge-b64": _declared_huge,
    # item 6: where downloads go
    "file-url": lambda gw, r: _images({"url": "file:///etc/passwd"}),
    "private-url": lambda gw, r: _images({"url": "https://10.20.30.40/x.png"}),
    "loopback-url": lambda gw, r: _images({"url": "https://127.0.0.2:9/x.png"}),
    "downgrade": lambda gw, r: _images({"url": gw.plain("/files/ok.png").replace(
        "127.0.0.1", "localhost")}),
    "redirect-to-http": lambda gw, r: _images({"url": gw.own("/files/to-plain.png")}),
    "post-307": lambda gw, r: web.Response(
        status=307, headers={"Location": gw.plain("/v1/images/edits")}),
    # item 7: what we store and print
    "echo-key-200": lambda gw, r: web.json_response(
        _images({**{"b64_json": b64(png())}, "revised_prompt": f"made with {gw.key}\x1b[2J"},
                usage={"input_tokens": 1, f"\x1b[31m{gw.key}": 5}),
        headers={"x-request-id": f"req-{gw.key}"}),
    "echo-key": lambda gw, r: _error(
        400, f"bad header {r.headers['Authorization']}; your key {gw.key} is wrong"),
    "huge-message": lambda gw, r: _error(400, "x" * (20 * MB)),
    "escapes": lambda gw, r: _error(400, "\x1b[2J\x1b[31mRED\x1b[0m\x07 done\x1b]0;title\x07"),
    # item 8: paid but unusable
    "gif": lambda gw, r: _images({"b64_json": b64(encoded("GIF"))}),
    "tiff": lambda gw, r: _images({"b64_json": b64(encoded("TIFF"))}),
    "bmp": lambda gw, r: _images({"b64_json": b64(encoded("BMP"))}),
    "svg": lambda gw, r: _images({"b64_json": b64(encoded("SVG"))}),
    "zero": lambda gw, r: _images(),
    "bomb": lambda gw, r: _images({"b64_json": b64(pixel_bomb())}),
}
