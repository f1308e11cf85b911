"""The simulator's request limit counts like the relay's: a sliding window, a bare 429."""

from __future__ import annotations

import aiohttp

from pipeline.simulator.app import SimulatorOptions, running_simulator
from pipeline.simulator.ratelimit import SlidingWindow
from tests.simulator.test_simulator import AUTH, KEY, edit_form


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_at_most_count_requests_in_any_window_and_refusals_are_not_counted() -> None:
    clock = Clock()
    window = SlidingWindow(3, 1.0, clock=clock)
    assert window.admit() is True
    clock.now = 100.5
    assert [window.admit() for _ in range(2)] == [True] * 2
    clock.now = 100.999
    assert window.admit() is False  # the first is not yet a whole period old
    assert window.wait() == 100.0 + 1.0 - 100.999
    for _ in range(50):
        assert window.admit() is False  # hammering frees nothing...
    clock.now = 101.0
    assert window.admit() is True  # ...and costs nothing: only time frees the window
    assert window.admit() is False  # the two of t=100.5 are still in it


def test_even_spacing_at_the_limit_never_trips_it() -> None:
    clock = Clock()
    window = SlidingWindow(20, 1.0, clock=clock)
    refused = 0
    for i in range(200):
        clock.now = 100.0 + i * 0.05
        refused += not window.admit()
    assert refused == 0
    clock.now += 0.049  # one a little early: the 20th before it is not yet a second old
    assert window.admit() is False


def test_a_burst_fills_the_window_at_once_unlike_a_bucket_that_refills() -> None:
    clock = Clock()
    window = SlidingWindow(20, 1.0, clock=clock)
    assert sum(window.admit() for _ in range(40)) == 20
    clock.now += 0.5  # half a second on: a refilling bucket would let 10 more through
    assert window.admit() is False
    clock.now += 0.5
    assert sum(window.admit() for _ in range(40)) == 20


async def test_a_refused_request_gets_a_bare_429_as_the_relay_sends_it() -> None:
    async with running_simulator(SimulatorOptions(rate_limit="1/min", api_key=KEY)) as sim, \
            aiohttp.ClientSession(headers=AUTH) as session:
        url = f"{sim.base_url}/images/edits"
        async with session.post(url, data=edit_form()) as first:
            assert first.status == 200
        async with session.post(url, data=edit_form()) as second:
            assert second.status == 429
            assert await second.read() == b""  # c.Status(429); c.Abort(): no body at all
            assert "Retry-After" not in second.headers
            assert "retry-after-ms" not in second.headers
        assert sim.stats.rejected_429 == 1
