"""Holds: a test stops the simulator at a named point of a request, and lets it go later.

A crash test must kill the client at an exact moment (the batch created, its answer
not yet received), not at a moment guessed by a timer. The test arms a point
(`POST /_sim/hold {"point": "batches.create"}`), waits until a request is held
there (`GET /_sim/held`), kills the client, then releases the point
(`POST /_sim/release`). Points: `files.create` (an upload read, nothing stored),
`batches.create` (the batch created, its answer not sent), `files.content`
(an output file half sent).

It never delays a request at a point nobody armed.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

POINTS = ("files.create", "batches.create", "files.content")


class Holds:
    def __init__(self) -> None:
        self.armed: Counter[str] = Counter()
        self.waiting: dict[str, list[asyncio.Event]] = {}

    async def at(self, point: str) -> None:
        """Wait here while the point is armed for this request; return at once otherwise."""
        if self.armed[point] <= 0:
            return
        self.armed[point] -= 1
        event = asyncio.Event()
        self.waiting.setdefault(point, []).append(event)
        try:
            await event.wait()
        finally:
            self.waiting[point].remove(event)

    def release(self, point: str | None = None) -> int:
        released = 0
        for name, events in self.waiting.items():
            if point in (None, name):
                for event in events:
                    event.set()
                released += len(events)
        if point is None:
            self.armed.clear()
        else:
            self.armed.pop(point, None)
        return released

    async def post_hold(self, request: web.Request) -> web.Response:
        body = await request.json()
        point, count = body.get("point"), body.get("count", 1)
        if point not in POINTS or not isinstance(count, int) or count < 1:
            return web.json_response({"error": f"point must be one of {POINTS}"}, status=400)
        self.armed[point] += count
        return await self.get_held(request)

    async def get_held(self, request: web.Request) -> web.Response:
        return web.json_response({p: len(e) for p, e in self.waiting.items() if e})

    async def post_release(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        return web.json_response({"released": self.release(body.get("point"))})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/_sim/hold", self.post_hold)
        app.router.add_get("/_sim/held", self.get_held)
        app.router.add_post("/_sim/release", self.post_release)
