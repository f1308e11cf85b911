"""Selenium driving Debian's Chromium through Debian's chromidriver (`chromium-driver`).

Nothing is downloaded: the driver and the browser are the machine's own packages,
named by path, so Selenium Manager never runs. A test asks for `driver()`; when
either binary is missing it skips, or fails when IMGEDIT_REQUIRE_CHROMIUM=1 (CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.browser import chromium


def find_driver() -> str | None:
    """chromedriver: $CHROMEDRIVER, else on PATH (Debian puts it in /usr/bin)."""
    return os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")


@contextmanager
def driver(profile: Path, size: tuple[int, int] = (1400, 860)) -> Iterator[object]:
    """A headless Chrome session on Debian's binaries; quits whatever happens."""
    binary, driver_path = chromium.find(), find_driver()
    if binary is None or driver_path is None:
        message = ("Chromium or chromedriver not found (Debian: apt-get install chromium "
                   "chromium-driver; or set CHROMIUM / CHROMEDRIVER)")
        if os.environ.get("IMGEDIT_REQUIRE_CHROMIUM"):
            pytest.fail(message)
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in chromium.FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    service = webdriver.ChromeService(executable_path=driver_path)
    session = webdriver.Chrome(options=options, service=service)
    try:
        yield session
    finally:
        session.quit()
