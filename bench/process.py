"""Processes the benchmark measures: the simulator in its own process, and clients timed whole.

A client runs as a child of a small launcher (`launch.py`) that reaps it with
os.wait4, which gives that one process's own CPU time and peak RSS
(RUSAGE_CHILDREN would mix in every earlier child, and a child of this large
process would inherit its peak RSS). The simulator is polled over
`GET /_sim/stats` to see when the first request arrived and when the last one
was answered, which is the window the throughput figures are taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
LAUNCH = Path(__file__).resolve().parent / "launch.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measured:
    """One whole client process: wall time, its own CPU and peak RSS, exit code, output."""

    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def tail(self, lines: int = 8) -> str:
        return "\n".join((self.stderr or self.stdout).strip().splitlines()[-lines:])


def measure(cmd: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None,
            wrap: Sequence[str] = ()) -> Measured:
    """Run `cmd` to its end; `wrap` (e.g. a profiler) goes in front and is measured too.

    The command is spawned by `launch.py`, not from here: see there why a child
    of this (large) process would report this process's peak RSS as its own.
    """
    out_path, err_path = cwd / ".bench-stdout", cwd / ".bench-stderr"
    result_path = cwd / ".bench-usage.json"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        # The shipped config, whatever the caller's shell points IMGEDIT_CONFIG at; and
        # bytecode cached as on a user's machine (pip compiles it, a clone's first run
        # writes it): with PYTHONDONTWRITEBYTECODE set (this project's machine sets it)
        # every measured process compiled its ~55 modules again, ~50 ms each time.
        unset = ("IMGEDIT_CONFIG", "PYTHONDONTWRITEBYTECODE")
        base = {k: v for k, v in os.environ.items() if k not in unset}
        subprocess.run([PY, "-S", str(LAUNCH), str(result_path), *wrap, *cmd], cwd=cwd,
                       stdout=out, stderr=err, env={**base, **(env or {})}, check=True)
    usage = json.loads(result_path.read_text())
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    for path in (out_path, err_path, result_path):
        path.unlink()
    return Measured(usage["wall_s"], usage["user_s"], usage["sys_s"],
                    usage["max_rss_kib"] / 1024, usage["returncode"], stdout, stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Simulator:
    """`python -m pipeline simulate` in its own process, for one scenario."""

    def __init__(self, *, latency: float = 0.0, rate_limit: str | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [PY, "-m", "pipeline", "simulate", "--port", str(self.port)]
        if latency:
            self.cmd += ["--latency", str(latency)]
        if rate_limit:
            self.cmd += ["--rate-limit", rate_limit]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Simulator:
        # The simulator accepts the token in IMGEDIT_API_KEY, the one the clients send.
        self.process = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT,
                                        env={**os.environ, "IMGEDIT_API_KEY": "bench"})
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode(errors="replace")
        if "listening" not in line:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the simulator did not start: {line.strip()!r}")
        self.warm()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def warm(self) -> None:
        """One edit of the benchmark's input, so its render is cached before anything is timed
        (otherwise a first wave of N identical requests renders N times)."""
        from catalog import MODEL, PROMPT, QUALITY, SIZE, tiny_jpeg
        from openai import OpenAI

        with OpenAI(base_url=self.base_url, api_key="bench", max_retries=0) as client:
            client.images.edit(model=MODEL, prompt=PROMPT, size=SIZE, quality=QUALITY,
                               image=("warm.jpg", tiny_jpeg(), "image/jpeg"))
        self.reset()

    def _call(self, method: str, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/stats")

    def reset(self) -> None:
        self._call("POST", "/_sim/reset")

    def cpu_s(self) -> float:
        """The simulator's CPU seconds so far (user + system), from /proc."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Window:
    """What the simulator said over time: (seconds, requests, succeeded, in flight) samples,
    from the first request on, and when the Nth request came and the Nth success went."""

    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    first_request: float | None = None
    last_request: float | None = None
    last_success: float | None = None

    def steady(self, start: float, end: float) -> tuple[float, float]:
        """Successes per second and mean requests in flight between two moments."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, 0.0
        (t0, _, ok0, _), (t1, _, ok1, _) = inside[0], inside[-1]
        return (ok1 - ok0) / (t1 - t0), sum(s[3] for s in inside) / len(inside)


@dataclass
class StatsPoller:
    """Polls the simulator every `every` seconds in a thread while a client runs."""

    simulator: Simulator
    expected: int
    every: float = 0.05
    window: Window = field(default_factory=Window)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Window:
        self._thread.start()
        return self.window

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        # A client that exits right after its last answer can be gone before the next poll
        # (imgedit leaves at once since cli.entry): a sample taken now closes the window,
        # late by at most one poll and the client's exit.
        if self.window.last_success is None:
            with contextlib.suppress(OSError):
                self._sample()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                if self._sample():
                    return
            except OSError:
                continue
            self._stop.wait(self.every)

    def _sample(self) -> bool:
        """Take one sample of the simulator's counters; True once every answer is in."""
        w = self.window
        stats = self.simulator.stats()
        now = time.perf_counter()
        if w.first_request is None and stats["requests"] >= 1:
            w.first_request = now
        if w.first_request is not None:
            w.samples.append((now, stats["requests"], stats["succeeded"], stats["in_flight"]))
        if w.last_request is None and stats["requests"] >= self.expected:
            w.last_request = now
        if w.last_success is None and stats["succeeded"] >= self.expected:
            w.last_success = now
        return w.last_success is not None
