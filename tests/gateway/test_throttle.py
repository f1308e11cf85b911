"""The pacer and the throttle that learns the rate, on a clock the tests move: nothing sleeps.

The last tests drive a throttle against the simulator's own sliding window
(the relay's limit) in virtual time: the learning is judged by the window it
has to live with, not by our own idea of it.
"""

from __future__ import annotations

import itertools

import pytest

from pipeline.gateway.limits import MARGIN, SHORTEST_WINDOW, SLACK, Pacer, Throttle
from pipeline.simulator.ratelimit import SlidingWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def departures(pacer: Pacer | Throttle, count: int) -> list[float]:
    return [await pacer.turn() for _ in range(count)]


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(times)]


# --- pacing -----------------------------------------------------------------------------------


async def test_the_pacer_spaces_requests_evenly_a_margin_under_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(20.0, clock=clock, sleep=clock.sleep)
    times = await departures(pacer, 41)
    assert gaps(times)[1:] == [round((1 + MARGIN) / 20, 9)] * 39
    assert gaps(times)[0] == round((1 + MARGIN) / 20 - SLACK, 9)  # made up the idle start
    # Any 20 in a row span more than the second a 20/s window counts over: none refused.
    window = SlidingWindow(20, 1.0, clock=lambda: clock.now)
    for t in times:
        clock.now = t
        assert window.admit()


async def test_a_late_wake_up_is_made_up_but_a_stall_is_not_made_up_by_a_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    interval = pacer.interval
    await pacer.turn()
    first = await pacer.turn()  # on the timeline from here
    clock.now = first + interval + SLACK / 2  # the loop woke us a little late
    late = await pacer.turn()
    on_time = await pacer.turn()
    assert late - first == pytest.approx(interval + SLACK / 2)
    assert on_time - first == pytest.approx(2 * interval)  # back on the timeline
    clock.now += 5.0  # a long stall
    after_stall = await departures(pacer, 3)
    assert gaps(after_stall) == pytest.approx([interval - SLACK, interval])  # no burst


async def test_a_request_that_leaves_late_keeps_the_next_one_an_interval_away() -> None:
    """Each request's ledger commit comes between its turn and the wire; one that took
    30 ms (a WAL checkpoint's fsync) made that request and the next reach the server
    21 ms apart, and the relay refused the 20th after them (seen at 20/s, told 20/s)."""
    clock = FakeClock()
    pacer = Pacer(20.0, clock=clock, sleep=clock.sleep)
    window = SlidingWindow(20, 1.0, clock=lambda: clock.now)
    arrived = []
    for number in range(60):
        await pacer.turn()
        clock.now += 0.030 if number == 10 else 0.0005  # the commit, then the request goes
        pacer.left()
        arrived.append(clock.now)
        assert window.admit(), f"request {number} refused"
    assert min(gaps(arrived)) >= pacer.interval - SLACK
    assert gaps(arrived)[10] == pytest.approx(pacer.interval - SLACK + 0.0005)  # not 21 ms
    assert max(gaps(arrived)) < pacer.interval + 0.030  # the delay is not paid twice


async def test_without_a_rate_nothing_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep)
    assert await departures(pacer, 100) == [1000.0] * 100
    pacer.left()
    assert await pacer.turn() == 1000.0


# --- learning from 429s (AIMD on the rate) ------------------------------------------------------


async def test_a_bare_429_cuts_the_rate_and_costs_one_interval_not_a_5_s_stop() -> None:
    clock = FakeClock()
    throttle = Throttle(20.0, clock=clock, sleep=clock.sleep)
    for departed in await departures(throttle, 20):
        throttle.on_success(departed)
    refused = await throttle.turn()
    throttle.on_limited(refused, retry_after=None)  # the relay's bare 429
    assert throttle.rate is not None and throttle.rate < 20.0 * 0.95  # multiplicative decrease
    assert throttle.cooldown.remaining() == 0  # nobody else stops
    before = clock.now
    await throttle.turn()
    assert clock.now - before == pytest.approx(throttle.pacer.interval)  # ~1/18 s, not 5 s
    assert clock.now - before < 0.1


async def test_a_retry_after_the_server_sends_rules_every_worker() -> None:
    clock = FakeClock()
    throttle = Throttle(20.0, clock=clock, sleep=clock.sleep)
    departed = await throttle.turn()
    throttle.on_limited(departed, retry_after=2.0)
    assert throttle.cooldown.remaining() == pytest.approx(2.0)  # its 2 s, not a fixed 5 s
    before = clock.now
    await throttle.cooldown.wait()
    assert clock.now - before == pytest.approx(2.0)


async def test_successes_add_the_rate_back_step_by_step_up_to_the_told_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(20.0, clock=clock, sleep=clock.sleep)
    for departed in await departures(throttle, 20):
        throttle.on_success(departed)
    throttle.on_limited(await throttle.turn())
    cut = throttle.rate
    assert cut is not None
    rates = [cut]
    for departed in await departures(throttle, 150):  # several windows of successes
        throttle.on_success(departed)
        if throttle.rate != rates[-1]:
            rates.append(throttle.rate)
    steps = [round(b - a, 9) for a, b in itertools.pairwise(rates) if b < 20.0]
    assert len(steps) >= 3 and all(s == pytest.approx(steps[0]) for s in steps)  # additive
    assert steps[0] < cut / 10  # ...in small steps
    for departed in await departures(throttle, 1000):
        throttle.on_success(departed)
    assert throttle.rate == 20.0  # never above the rate the user gave


async def test_429s_of_requests_sent_before_the_cut_do_not_cut_again() -> None:
    clock = FakeClock()
    throttle = Throttle(20.0, clock=clock, sleep=clock.sleep)
    for departed in await departures(throttle, 20):
        throttle.on_success(departed)
    in_flight = [await throttle.turn() for _ in range(5)]
    clock.now += 0.01  # the first answer comes back
    throttle.on_limited(in_flight[0])
    once = throttle.rate
    for departed in in_flight[1:]:
        throttle.on_limited(departed)  # already on the wire when the first came back
    assert throttle.rate == once


async def test_told_nothing_it_goes_unpaced_until_a_429_then_paces_what_got_through() -> None:
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    burst = await departures(throttle, 20)
    assert burst == [1000.0] * 20  # no rate known: as fast as the concurrency allows
    for departed in burst:
        throttle.on_success(departed)
    clock.now += 0.01
    throttle.on_limited(await throttle.turn())
    assert throttle.rate == pytest.approx(Throttle.BETA * 20)  # 20 got through in a second
    await throttle.turn()
    assert clock.now >= 1000.0 + SHORTEST_WINDOW  # the burst's window rolled over first


async def test_unpaced_only_with_no_rate_and_enough_answers_through_without_a_429() -> None:
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    sent = await departures(throttle, 4)
    for departed in sent[:3]:
        throttle.on_success(departed)
    assert not throttle.unpaced(4)  # 3 answers through: still finding out
    throttle.on_success(sent[3])
    assert throttle.unpaced(4)
    throttle.on_limited(await throttle.turn())
    assert not throttle.unpaced(4)  # a 429 set a rate: paced from now on
    told = Throttle(20.0, clock=clock, sleep=clock.sleep)
    for departed in await departures(told, 8):
        told.on_success(departed)
    assert not told.unpaced(4)


async def converge(throttle: Throttle, window: SlidingWindow, clock: FakeClock,
                   requests: int) -> tuple[int, float]:
    """One worker, 1 ms per round trip, against `window`: (429s, seconds for all)."""
    start, refused, done = clock.now, 0, 0
    while done < requests:
        departed = await throttle.turn()
        await throttle.cooldown.wait()
        clock.now += 0.001
        if window.admit():
            throttle.on_success(departed)
            done += 1
        else:
            refused += 1
            throttle.on_limited(departed)
    return refused, clock.now - start


async def test_told_nothing_it_learns_a_sliding_window_it_cannot_see() -> None:
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    window = SlidingWindow(20, 1.0, clock=clock)
    refused, seconds = await converge(throttle, window, clock, 400)
    assert refused <= 10  # a handful of probes above the limit, each answered by a cut
    assert 400 / seconds >= 0.85 * 20  # ...while keeping most of what the window allows


async def test_told_the_rate_of_the_window_it_is_never_refused() -> None:
    clock = FakeClock()
    throttle = Throttle(20.0, clock=clock, sleep=clock.sleep)
    window = SlidingWindow(20, 1.0, clock=clock)
    refused, seconds = await converge(throttle, window, clock, 400)
    assert refused == 0
    assert 400 / seconds >= 0.97 * 20


async def test_a_window_of_a_minute_is_learnt_too_without_falling_to_nothing() -> None:
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    window = SlidingWindow(30, 60.0, clock=clock)  # the relay's default unit: per minute
    refused, seconds = await converge(throttle, window, clock, 120)
    assert refused <= 20  # 429s in a row double the pause until the minute rolls over
    assert throttle.rate is not None and 0.3 <= throttle.rate <= 0.6  # about 30/min
    assert 120 / seconds >= 0.75 * 0.5
