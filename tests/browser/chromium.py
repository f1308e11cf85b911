"""Headless Chromium from the command line: dump a page's DOM after its scripts ran, or shoot it.

No Python dependency: the page checks itself. `report_template.html` runs a self-test
when opened at `#selftest:<search>` and writes the result as JSON into
`<pre id="selftest" data-done="1">`; `--dump-dom` with a virtual-time budget lets
its scripts and image loads finish before the DOM is printed.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

# Quiet, offline, deterministic: no sandbox (CI runs as root in a container), no GPU,
# no first-run UI, no background traffic to Google.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
VIRTUAL_TIME_MS = 5000
_SELFTEST = re.compile(r'<pre id="selftest"[^>]*data-done="1"[^>]*>(.*?)</pre>', re.S)


def find() -> str | None:
    """The Chromium binary: $CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def run(binary: str, url: str, profile: Path, *args: str, timeout: float = 60) -> str:
    """Run Chromium once on `url`; returns its stdout. Kills its whole process group on timeout."""
    command = [binary, *FLAGS, f"--user-data-dir={profile}", *args, url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"chromium did not finish in {timeout} s: {command}") from None
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {command}\n{err[-2000:]}")
    return out


def selftest(binary: str, page: Path, profile: Path, search: str = "") -> dict[str, Any]:
    """Open `page` at #selftest:<search> and return what its self-test saw."""
    url = page.resolve().as_uri() + "#selftest:" + search
    dom = run(binary, url, profile, f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom")
    found = _SELFTEST.search(dom)
    if not found:
        raise AssertionError(f"the page's self-test did not finish; DOM tail:\n{dom[-2000:]}")
    result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return result


def screenshot(binary: str, page: Path, out: Path, profile: Path,
               size: tuple[int, int] = (1200, 800)) -> Path:
    """A PNG of the top `size` of `page`, as a person would first see it."""
    run(binary, page.resolve().as_uri(), profile, f"--window-size={size[0]},{size[1]}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--screenshot={out}")
    if not out.exists():
        raise AssertionError(f"chromium wrote no screenshot at {out}")
    return out
