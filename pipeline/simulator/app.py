"""The local gateway: an aiohttp app that answers like the relay (new-api) does on
`POST /v1/images/edits`, `/v1/chat/completions` and `/v1beta/models/{model}:generateContent`.

It owns the request's way through the gateway (the relay's key check, rate limit,
reading the route's body, fault, latency, then the edit), b64 / URL / data-URL
answers and the URLs they point to, the counters tests read, and three ways to run
it: in a task, in a thread, or from `imgedit simulate`. The rest is in its own
modules: `relay.py` what the relay itself answers (key, channels, body limit, its
error shape), `routes.py` the three routes and the channels behind them,
`request.py` the multipart form as the relay forwards it, `render.py` the Pillow
edit, `usage.py` the tokens an answer bills, `faults.py` what it does wrong on purpose.

It must never contact the real gateway, never write to disk, and never keep
the API key it checks: it only notes whether an Authorization header came.
"""

from __future__ import annotations

import asyncio
import copy
import random
import secrets
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pipeline.simulator import routes
from pipeline.simulator.faults import (
    IMMEDIATE_FAULTS,
    FaultPlan,
    SimulatorOptions,
    Ticket,
    error_response,
    fault_response,
    parse_latency,
    parse_rate_limit,
)
from pipeline.simulator.ratelimit import SlidingWindow, refusal
from pipeline.simulator.relay import MAX_BODY_BYTES, RelayError, check_key
from pipeline.simulator.render import RenderCache, Rendered, open_inputs, prompt_colour, render
from pipeline.simulator.request import Edit, GatewayError
from pipeline.simulator.stats import SimulatorStats, bump, describe
from pipeline.simulator.usage import usage

# MAX_BODY_BYTES and prompt_colour are re-exported: tests import them from here.
__all__ = ["MAX_BODY_BYTES", "SimulatorOptions", "SimulatorStats", "SimulatorThread",
           "create_app", "prompt_colour", "running_simulator", "serve"]

FILES_KEPT = 4096  # URL answers stay fetchable this long, like a CDN link that expires


def answer_mode(option: str, edit: Edit) -> str:
    """b64, url or data-url: the option forces one, else the model and response_format decide."""
    if option != "auto":
        return option
    if edit.model.startswith("gpt-image"):
        return "b64"
    if edit.response_format:
        return "b64" if edit.response_format == "b64_json" else "url"
    # Nano-banana's inline image comes through the relay as a data: URL.
    return "data-url" if edit.model.startswith("gemini") else "url"


class Gateway:
    """The simulator's state and request handlers; one per app."""

    def __init__(self, options: SimulatorOptions):
        self.options = options
        self.stats = SimulatorStats()
        self.plan = FaultPlan(options.faults, options.fail_first, options.fault_by_prompt,
                              options.seed)
        rate = options.rate_limit
        self.limit = SlidingWindow(*parse_rate_limit(rate)) if rate else None
        self.latency = parse_latency(options.latency)
        self.cache = RenderCache()
        self.files: OrderedDict[str, Rendered] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        """Zero the counters; faults, limit and latency replay from the start."""
        self.stats.clear()
        self.plan.reset()
        if self.limit:
            self.limit.reset()
        self.latency_rng = random.Random(f"{self.options.seed}:latency")
        self.last: dict[str, Any] = {}

    async def edit(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "images")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "gemini")

    async def _handle(self, request: web.Request, route: str) -> web.StreamResponse:
        stats, key = self.stats, request.headers.get("Idempotency-Key")
        stats.requests += 1
        bump(stats.by_route, route)
        if key:
            bump(stats.by_key, key)
        ticket = self.plan.arrive(key)  # before any await, so faults follow arrival order
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._edit(request, ticket, route)
        except (GatewayError, RelayError) as exc:
            response = exc.response()
        finally:
            stats.in_flight -= 1
        if response.status == 429:
            stats.rejected_429 += 1
        return response

    async def _read(self, request: web.Request, route: str) -> routes.Job:
        if route == "chat":
            job = await routes.chat(request, self.options)
            parts = list(job.edit.images)
        elif route == "gemini":
            job = await routes.gemini(request, self.options)
            parts = list(job.edit.images)
        else:
            job, parts = await routes.images(request, self.options)
        self.last = describe(parts, request) | {"route": route}
        return job

    async def _edit(self, request: web.Request, ticket: Ticket,
                    route: str) -> web.StreamResponse:
        # middleware/auth.go: the exact token, before anything else is read.
        check_key(request.headers.get("Authorization", ""), self.options.api_key)
        if self.limit and not self.limit.admit():
            return refusal(self.limit, retry_after=self.options.rate_limit_retry_after)
        job = await self._read(request, route)
        edit = job.edit
        rendered = self.cache.get(edit.render_key)
        # Bytes already rendered once are known to decode: a cache hit skips decoding.
        inputs = None if rendered else await asyncio.to_thread(open_inputs, edit)
        fault = self.plan.choose(ticket, edit.prompt)
        if fault:
            bump(self.stats.faults, fault)
        if fault not in IMMEDIATE_FAULTS:
            delay = self.options.slow_seconds if fault == "slow" else self.latency(self.latency_rng)
            if delay:
                await asyncio.sleep(delay)  # the upstream's work, after the upload
        if fault == "drop":
            if request.transport is not None:  # None when the client already left
                request.transport.close()  # everything was uploaded; nothing comes back
            return web.Response(status=204)  # never delivered: the socket is closed
        if fault and fault != "slow":
            return fault_response(fault)
        if rendered is None:
            assert inputs is not None
            rendered = await asyncio.to_thread(render, edit, *inputs)
            self.cache.put(edit.render_key, rendered)
        if job.shape != "images":
            self._count(request, 1)
            return web.json_response(routes.answer(job, rendered))
        return self.answer(request, edit, rendered)

    def _count(self, request: web.Request, images: int) -> None:
        self.stats.succeeded += 1
        self.stats.images += images
        if key := request.headers.get("Idempotency-Key"):
            bump(self.stats.succeeded_by_key, key)

    def answer(self, request: web.Request, edit: Edit, rendered: Rendered) -> web.Response:
        mode = answer_mode(self.options.response, edit)
        body: dict[str, Any] = {"created": int(time.time()),
                                "data": [self.item(request, rendered, mode) for _ in range(edit.n)]}
        if edit.model.startswith(("gpt-image", "chatgpt-image")):
            body |= {"background": edit.background, "output_format": edit.output_format,
                     "size": "{}x{}".format(*edit.size),
                     "usage": usage(edit.prompt, edit.quality, edit.size, edit.n,
                                    rendered.inputs)}
        self._count(request, edit.n)
        return web.json_response(body)

    def item(self, request: web.Request, rendered: Rendered, mode: str) -> dict[str, str]:
        if mode == "b64":
            return {"b64_json": rendered.b64}
        if mode == "data-url":
            return {"url": f"data:{rendered.content_type};base64,{rendered.b64}"}
        token = secrets.token_hex(12)
        self.files[token] = rendered
        if len(self.files) > FILES_KEPT:
            self.files.popitem(last=False)
        return {"url": f"{request.scheme}://{request.host}/files/{token}.{rendered.format}"}

    async def file(self, request: web.Request) -> web.Response:
        """A URL answer's image, served without auth like a CDN link."""
        rendered = self.files.get(request.match_info["name"].partition(".")[0])
        if rendered is None:
            return error_response(404, "This file link has expired or never existed.",
                                  type="invalid_request_error", code="file_not_found")
        return web.Response(body=rendered.data, content_type=rendered.content_type)

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def get_last(self, request: web.Request) -> web.Response:
        return web.json_response(self.last)

    async def post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.stats.as_dict())


GATEWAY = web.AppKey("gateway", Gateway)


@web.middleware
async def request_id(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer carries an x-request-id, as the gateway's do, errors included."""
    rid = f"req_{secrets.token_hex(12)}"
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers["x-request-id"] = rid
        raise
    response.headers["x-request-id"] = rid
    return response


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    gateway = Gateway(options or SimulatorOptions())
    app = web.Application(middlewares=[request_id])
    app[GATEWAY] = gateway
    app.router.add_post("/v1/images/edits", gateway.edit)
    app.router.add_post("/v1/chat/completions", gateway.chat)
    app.router.add_post("/v1beta/models/{target}", gateway.gemini)
    app.router.add_get("/files/{name}", gateway.file)
    app.router.add_get("/_sim/stats", gateway.get_stats)
    app.router.add_get("/_sim/last", gateway.get_last)
    app.router.add_post("/_sim/reset", gateway.post_reset)
    return app


@dataclass(frozen=True)
class RunningSimulator:
    base_url: str  # http://127.0.0.1:PORT/v1
    gateway: Gateway

    @property
    def stats(self) -> SimulatorStats:
        return self.gateway.stats

    def reset(self) -> None:
        self.gateway.reset()


@asynccontextmanager
async def running_simulator(options: SimulatorOptions | None = None
                            ) -> AsyncIterator[RunningSimulator]:
    """Serve on options.host and options.port (0: a free port) until the block ends."""
    options = options or SimulatorOptions()
    app = create_app(options)
    # A request still waiting (slow, latency) at shutdown is cut short, not awaited.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, options.host, options.port).start()
        host, port = runner.addresses[0][:2]
        yield RunningSimulator(f"http://{host}:{port}/v1", app[GATEWAY])
    finally:
        await runner.cleanup()


class SimulatorThread:
    """The simulator on its own event loop in a thread: `with SimulatorThread(options) as sim:`."""

    def __init__(self, options: SimulatorOptions | None = None):
        self.options = options or SimulatorOptions()
        self._thread = threading.Thread(target=self._run, name="imgedit-simulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._sim: RunningSimulator | None = None

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    @property
    def base_url(self) -> str:
        return self._running().base_url

    def stats(self) -> SimulatorStats:
        """A copy, taken on the simulator's loop so no counter is caught half-updated."""
        return self._on_loop(lambda: copy.deepcopy(self._running().stats))

    def reset(self) -> None:
        self._on_loop(self._running().reset)

    def _running(self) -> RunningSimulator:
        if self._sim is None:
            raise RuntimeError("SimulatorThread is not running: use it in a `with` block")
        return self._sim

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # a failed start is re-raised by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with running_simulator(self.options) as sim:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._sim = sim
            self._ready.set()
            await self._stop.wait()
        self._sim = None


def serve(options: SimulatorOptions | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM: `imgedit simulate --port N`."""
    with suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(options or SimulatorOptions()))


async def _serve_until_stopped(options: SimulatorOptions) -> None:
    async with running_simulator(options) as sim:
        stop = asyncio.Event()
        with suppress(NotImplementedError):  # no signal handlers on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(f"simulator listening on {sim.base_url}", flush=True)
        await stop.wait()
