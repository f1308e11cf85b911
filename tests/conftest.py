"""Shared fixtures: the real simulator on loopback, the CLI as a subprocess, tiny images.

Nothing here mocks our own code: tests talk HTTP to the simulator and run
`python -m pipeline` exactly as a user or cron would.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image

from pipeline.config.models import Models
from pipeline.simulator.app import SimulatorOptions, SimulatorThread

TEST_KEY = "sk-test-DO-NOT-LEAK-3f9c2e7a"
ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = ROOT / "pipeline" / "config" / "models.yaml"


@pytest.fixture(scope="module")
def models() -> Models:
    """The shipped model table, as a user without --config has it."""
    return Models.load(SHIPPED_MODELS)


def image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, fmt)
    return path


def tiny_image(path: Path, color: tuple[int, int, int] = (200, 40, 40), size: int = 24,
               fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path, fmt)
    return path


def transparent_mask(path: Path, size: int = 24) -> Path:
    """Left half transparent (edit there), right half opaque (keep)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    for x in range(size // 2):
        for y in range(size):
            image.putpixel((x, y), (0, 0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorThread]]:
    """Start simulators (in a background thread) with the given options."""
    started: list[SimulatorThread] = []

    def start(**options: Any) -> SimulatorThread:
        sim = SimulatorThread(SimulatorOptions.from_mapping({"api_key": TEST_KEY, **options}))
        sim.__enter__()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.__exit__(None, None, None)


@pytest.fixture
def sim(simulator: Callable[..., SimulatorThread]) -> SimulatorThread:
    return simulator()


class Cli:
    """Runs `python -m pipeline ...` in a folder, against a simulator URL."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IMGEDIT_")},
            "IMGEDIT_API_KEY": TEST_KEY,
            "IMGEDIT_RETRY_WAIT_SCALE": "0",  # the testing switch: no backoff sleeps
            "PYTHONPATH": str(ROOT),
        }

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args], cwd=self.cwd, text=True,
            capture_output=True, env={**self.env, **(env or {})}, timeout=timeout)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], cwd=self.cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**self.env, **(env or {})})

    def json(self, *args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        done = self(*args, "--json", **kw)
        assert done.stdout.strip(), done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition (a counter, a file) with a deadline: waiting for a state, not a time."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def readline_within(stream: IO[str], timeout: float) -> str:
    """A line a child process prints, or an AssertionError after `timeout` seconds: a
    child that hangs before printing fails the test instead of hanging it."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line within {timeout:g} s")
    return stream.readline()


def write_manifest(folder: Path, body: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path
