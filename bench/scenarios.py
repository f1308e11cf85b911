"""The four scenarios of DESIGN.md "Targets", each returning rows for the table and notes.

Every client run is a whole process on a fresh catalog folder (so a fresh
ledger), against a simulator started for that scenario in its own process.
Nothing is deleted until the whole benchmark ends: on ext4, creating files in
the half minute after many were deleted costs several times more (the inode
allocator skips recently deleted inodes one by one), which would tax whichever
client ran next, and imgedit, which writes two files per task, twice.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog import make_catalog
from process import PY, Measured, Simulator, StatsPoller, measure

API_ENV = {"IMGEDIT_API_KEY": "bench"}  # the simulator wants some key; it keeps none
LITTLE_LATENCY, LITTLE_CONCURRENCY = 0.5, 50
Profile = Callable[[str], tuple[str, ...]]  # run label -> command prefix (a profiler)


@dataclass
class Row:
    scenario: str
    figure: str
    imgedit: str
    sdk: str
    target: str
    verdict: str  # PASS, MISS, ERROR or "" (no target)


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ClientFailed(Exception):
    pass


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def imgedit_cmd(manifest: Path, base_url: str, concurrency: int, rate: str = "unlimited"
                ) -> list[str]:
    return [PY, "-m", "pipeline", "run", str(manifest), "--base-url", base_url,
            "--concurrency", str(concurrency), "--rate", rate, "--quiet", "--json"]


# The clients imgedit is measured beside, scripts of this folder: what a user would write
# instead, and the least any client can do (the machine's floor).
BASELINES = {"sdk": "sdk_baseline.py", "bare": "bare_client.py"}


def script_cmd(script: str, root: Path, base_url: str, concurrency: int) -> list[str]:
    """One of BASELINES over `root`."""
    return [PY, str(Path(__file__).resolve().parent / script), str(root),
            "--base-url", base_url, "--concurrency", str(concurrency)]


def run_imgedit(manifest: Path, base_url: str, concurrency: int, rate: str = "unlimited",
                wrap: tuple[str, ...] = ()) -> tuple[Measured, dict[str, Any]]:
    m = measure(imgedit_cmd(manifest, base_url, concurrency, rate), cwd=manifest.parent,
                env=API_ENV, wrap=wrap)
    try:
        summary = json.loads(m.stdout)
    except ValueError:
        summary = {}
    if m.returncode != 0:
        raise ClientFailed(f"imgedit exited {m.returncode}:\n{m.tail()}")
    return m, summary


def run_script(script: str, root: Path, base_url: str, concurrency: int) -> Measured:
    m = measure(script_cmd(script, root, base_url, concurrency), cwd=root)
    if m.returncode != 0:
        raise ClientFailed(f"{script} exited {m.returncode}:\n{m.tail()}")
    return m


def check_answered(sim: Simulator, expected: int, who: str) -> dict[str, Any]:
    stats = sim.stats()
    if stats["succeeded"] != expected:
        raise ClientFailed(f"{who}: the simulator answered {stats['succeeded']} of "
                           f"{expected} requests with images ({stats['requests']} requests)")
    return stats


# --- overhead ---------------------------------------------------------------------------------

def overhead(work: Path, tasks: int, rounds: int, concurrency: int = 64,
             profile: Profile | None = None) -> Outcome:
    """imgedit and the SDK script, alternated, on the same work against a zero-latency simulator."""
    out = Outcome()
    runs: dict[str, list[tuple[Measured, float]]] = {"imgedit": [], "sdk": []}
    with Simulator() as sim:
        for who in ("imgedit", "sdk"):  # warm-up: imports, page cache, the simulator's render
            _overhead_round(work / f"warm-{who}", who, 64, concurrency, sim)
        for r in range(rounds):
            for who in (("imgedit", "sdk") if r % 2 == 0 else ("sdk", "imgedit")):
                wrap = profile(f"overhead-{who}-{r}") if profile and who == "imgedit" else ()
                runs[who].append(_overhead_round(work / f"overhead-{r}-{who}", who, tasks,
                                                 concurrency, sim, wrap))
    rate = {w: statistics.median(tasks / m.wall_s for m, _ in runs[w]) for w in runs}
    cpu = {w: statistics.median(m.cpu_s / tasks * 1000 for m, _ in runs[w]) for w in runs}
    sim_cpu = {w: statistics.median(s / tasks * 1000 for _, s in runs[w]) for w in runs}
    ratio = rate["imgedit"] / rate["sdk"]
    what = f"{tasks:,} tasks, conc {concurrency}, median of {rounds}"
    out.rows.append(Row("overhead", f"tasks/s ({what})", f"{rate['imgedit']:.0f}",
                        f"{rate['sdk']:.0f}", f">= 1.5x SDK: {ratio:.2f}x", verdict(ratio >= 1.5)))
    cpu_ratio = cpu["sdk"] / cpu["imgedit"]
    out.rows.append(Row("overhead", "client CPU ms per task", f"{cpu['imgedit']:.2f}",
                        f"{cpu['sdk']:.2f}", f"(SDK/imgedit {cpu_ratio:.2f}x)", ""))
    for who in runs:
        per_round = ", ".join(f"{tasks / m.wall_s:.0f}/s {m.cpu_s:.1f} cpu-s "
                              f"{m.max_rss_mb:.0f} MB" for m, _ in runs[who])
        out.notes.append(f"overhead {who:7}: {per_round}; simulator CPU "
                         f"{sim_cpu[who]:.2f} ms/request")
    return out


def _overhead_round(root: Path, who: str, tasks: int, concurrency: int, sim: Simulator,
                    wrap: tuple[str, ...] = ()) -> tuple[Measured, float]:
    manifest = make_catalog(root, tasks)
    sim.reset()
    before = sim.cpu_s()
    if who == "imgedit":
        m, _ = run_imgedit(manifest, sim.base_url, concurrency, wrap=wrap)
    else:
        m = run_script(BASELINES["sdk"], root, sim.base_url, concurrency)
    sim_cpu = sim.cpu_s() - before
    check_answered(sim, tasks, who)
    return m, sim_cpu


# --- concurrency (Little's law) ---------------------------------------------------------------

def concurrency(work: Path, tasks: int) -> Outcome:
    """At 0.5 s per request and 50 in flight, Little's law allows 100 tasks/s.

    The figure is taken while the client has work queued: from one latency after
    the first request (the first wave is back) to the moment the last request
    arrives (from then on no client can keep 50 in flight). The whole window,
    ramp and tail included, and the whole process are in the notes, with the same
    figures for bare_client.py: the floor of this machine, which checks nothing first
    and keeps nothing.
    """
    out = Outcome()
    little = LITTLE_CONCURRENCY / LITTLE_LATENCY
    steady: dict[str, float] = {}
    whole: dict[str, float] = {}
    with Simulator(latency=LITTLE_LATENCY) as sim:
        for who in ("imgedit", "sdk", "bare"):
            root = work / f"little-{who}"
            manifest = make_catalog(root, tasks)
            sim.reset()
            with StatsPoller(sim, tasks) as window:
                # The poller's clock; the launcher's own start counts, alike for each client.
                started = time.perf_counter()
                if who == "imgedit":
                    m, _ = run_imgedit(manifest, sim.base_url, LITTLE_CONCURRENCY)
                else:
                    m = run_script(BASELINES[who], root, sim.base_url, LITTLE_CONCURRENCY)
            stats = check_answered(sim, tasks, who)
            first, last, done = window.first_request, window.last_request, window.last_success
            assert first is not None and last is not None and done is not None
            steady[who], in_flight = window.steady(first + LITTLE_LATENCY, last)
            whole[who] = tasks / m.wall_s
            out.notes.append(
                f"concurrency {who:7}: {steady[who]:.1f} tasks/s with work queued (mean "
                f"{in_flight:.1f} in flight at the simulator, max {stats['max_in_flight']}); "
                f"{tasks / (done - first):.1f}/s from first request to last answer; "
                f"{tasks / m.wall_s:.1f}/s over the whole process ({m.wall_s:.2f} s, "
                f"{first - started:.2f} s of it before the first request)")
    out.notes.append(
        f"concurrency floor: over the whole process bare_client.py reached "
        f"{whole['bare'] / little:.1%} of {little:.0f}/s, imgedit {whole['imgedit'] / little:.1%}")
    share = steady["imgedit"] / little
    out.rows.append(Row("concurrency",
                        f"tasks/s ({tasks:,} tasks, latency {LITTLE_LATENCY:g} s, "
                        f"conc {LITTLE_CONCURRENCY})",
                        f"{steady['imgedit']:.1f}", f"{steady['sdk']:.1f}",
                        f">= 95% of {little:.0f}: {share:.1%}", verdict(share >= 0.95)))
    share = whole["imgedit"] / little
    out.rows.append(Row("concurrency", "tasks/s end to end (whole process: start-up, checks, "
                        "sending, summary)", f"{whole['imgedit']:.1f}", f"{whole['sdk']:.1f}",
                        f">= 95% of {little:.0f}: {share:.1%}", verdict(share >= 0.95)))
    return out


# --- rate -------------------------------------------------------------------------------------

def rate(work: Path, tasks: int, per_second: int, concurrency: int = 16) -> Outcome:
    """The simulator limits like the relay (a sliding window, a bare 429, no Retry-After).

    "known": imgedit is told the limit (`--rate 20/s`). "unknown": it is told nothing
    (`--rate unlimited`) and must learn the limit from the 429s. The rate is taken at
    the simulator, from the first request to the last success.
    """
    out = Outcome()
    limit = f"{per_second}/s"
    targets = {"known": (0.97, 0.005, limit), "unknown": (0.85, 0.05, "unlimited")}
    with Simulator(rate_limit=limit) as sim:
        for name, (share_target, refused_target, told) in targets.items():
            manifest = make_catalog(work / f"rate-{name}", tasks)
            sim.reset()
            with StatsPoller(sim, tasks) as window:
                m, _ = run_imgedit(manifest, sim.base_url, concurrency, rate=told)
            stats = check_answered(sim, tasks, f"imgedit, rate {name}")
            assert window.first_request is not None and window.last_success is not None
            achieved = tasks / (window.last_success - window.first_request)
            share = achieved / per_second
            refused = int(stats["rejected_429"]) / int(stats["requests"])
            what = f"rate, {name}"
            out.rows.append(Row(what, f"answers/s, limit {limit}, told {told} ({tasks:,} tasks, "
                                f"conc {concurrency})", f"{achieved:.2f} ({share:.1%})", "-",
                                f">= {share_target:.0%}", verdict(share >= share_target)))
            out.rows.append(Row(what, "share of requests answered 429",
                                f"{refused:.1%} ({stats['rejected_429']})", "-",
                                f"<= {refused_target:.1%}", verdict(refused <= refused_target)))
            out.notes.append(f"rate, {name}: {stats['requests']} requests for {tasks} tasks; "
                             f"whole process {m.wall_s:.1f} s")
    out.notes.append("rate: the SDK script has no rate limiter, so no SDK figure")
    return out


# --- scale ------------------------------------------------------------------------------------

def scale(work: Path, small: int, large: int, concurrency: int = 64,
          profile: Profile | None = None) -> Outcome:
    """Full runs at `small` and `large` tasks (peak RSS), then a re-run of the large one."""
    out = Outcome()
    full: dict[int, Measured] = {}
    with Simulator() as sim:
        for count in (small, large):
            root = work / f"scale-{count}"
            started = time.perf_counter()
            manifest = make_catalog(root, count)
            made = time.perf_counter() - started
            sim.reset()
            wrap = profile(f"scale-full-{count}") if profile else ()
            full[count], _ = run_imgedit(manifest, sim.base_url, concurrency, wrap=wrap)
            check_answered(sim, count, f"imgedit at {count:,}")
            m = full[count]
            out.notes.append(f"scale full run {count:>7,}: {m.wall_s:.1f} s "
                             f"({count / m.wall_s:.0f} tasks/s), peak RSS {m.max_rss_mb:.0f} MB, "
                             f"CPU {m.cpu_s:.1f} s; catalog made in {made:.1f} s")
            if count == large:
                sim.reset()
                wrap = profile(f"scale-rerun-{count}") if profile else ()
                rerun, summary = run_imgedit(manifest, sim.base_url, concurrency, wrap=wrap)
                sent = sim.stats()["requests"]
                if sent:
                    raise ClientFailed(f"the re-run of {count:,} finished tasks sent {sent}")
                out.notes.append(f"scale re-run    {count:>7,}: {rerun.wall_s:.1f} s, peak RSS "
                                 f"{rerun.max_rss_mb:.0f} MB, CPU {rerun.cpu_s:.1f} s, "
                                 f"plan {summary.get('plan')}, sent {sent}")
    peak, ratio = full[large].max_rss_mb, full[large].max_rss_mb / full[small].max_rss_mb
    out.rows.append(Row("scale", f"peak RSS, full run of {large:,} tasks", f"{peak:.0f} MB", "-",
                        "<= 250 MB", verdict(peak <= 250)))
    out.rows.append(Row("scale", f"peak RSS {large:,} / {small:,}",
                        f"{ratio:.2f}x ({full[small].max_rss_mb:.0f} MB)", "-", "<= 1.5x",
                        verdict(ratio <= 1.5)))
    out.rows.append(Row("scale", f"re-run of the finished {large:,} manifest",
                        f"{rerun.wall_s:.1f} s", "-", "<= 10 s", verdict(rerun.wall_s <= 10)))
    return out
