"""Start-up stays cheap: `--help` and `validate` do not import what only sending needs.

Counted in modules, not seconds (no timed assertion here: `make bench` times it).
A new command that imports its work at the top of cli.py fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.simulator.app import SimulatorThread
from tests.conftest import TEST_KEY, tiny_image

ROOT = Path(__file__).resolve().parents[1]
SENDING_ONLY = ("aiohttp", "anyio", "rich", "tenacity", "pipeline.simulator",
                "pipeline.run.scheduler", "pipeline.gateway.client")
PROBE = """
import json, sys
from pipeline.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "", **(env or {})})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in SENDING_ONLY or m in SENDING_ONLY
                  or any(m.startswith(f"{s}.") for s in SENDING_ONLY))


def test_help_imports_click_and_little_else() -> None:
    modules = imported("--help")
    assert heavy(modules) == []
    assert "PIL" not in modules and "yaml" not in modules and "sqlite3" not in modules


def test_validate_imports_nothing_that_only_sending_needs(tmp_path: Path) -> None:
    tiny_image(tmp_path / "a.png")
    (tmp_path / "job.yaml").write_text(
        "version: 1\nprovider: openai\ntasks:\n  - images: a.png\n    prompt: white\n")
    assert heavy(imported("validate", "job.yaml", cwd=tmp_path)) == []


def test_tenacity_is_imported_only_when_a_first_attempt_fails(
        tmp_path: Path, simulator: Callable[..., SimulatorThread]) -> None:
    """The retry policy is built after a failure (retry.attempts): a run whose requests all
    succeed at once never imports tenacity; one whose request failed does, and retries."""
    tiny_image(tmp_path / "a.png")
    (tmp_path / "job.yaml").write_text(
        "version: 1\nprovider: openai\ntasks:\n  - images: a.png\n    prompt: white\n")
    env = {"IMGEDIT_API_KEY": TEST_KEY, "IMGEDIT_RETRY_WAIT_SCALE": "0"}
    quick = simulator()
    modules = imported("run", "job.yaml", "--base-url", quick.base_url, cwd=tmp_path, env=env)
    assert "aiohttp" in modules and "tenacity" not in modules
    assert quick.stats().succeeded == 1

    (tmp_path / "job.yaml").write_text(
        "version: 1\nprovider: openai\ntasks:\n  - images: a.png\n    prompt: navy\n")
    failing = simulator(fail_first={"502": 1})
    modules = imported("run", "job.yaml", "--base-url", failing.base_url, cwd=tmp_path, env=env)
    assert "tenacity" in modules
    assert failing.stats().requests == 2 and failing.stats().succeeded == 1
