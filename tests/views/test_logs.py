"""Log handlers mask the key whatever the message: the last guard before a log file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.views import logs

KEY = "k3y-that-looks-like-nothing-0042"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logger = logging.getLogger(logs.LOGGER)
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_key_in_a_message_or_a_field_never_reaches_the_log(
        tmp_path: Path, restore_logging: None, fmt: str) -> None:
    log = tmp_path / "run.log"
    logs.configure(log_file=log, fmt=fmt, secrets=[KEY])
    # Text that never went through the gateway's cleaning: only the handler stands between
    # it and the file.
    logs.event(logging.WARNING, f"env dump IMGEDIT_API_KEY={KEY}", id="t1",
               error=f"headers: Authorization: Bearer {KEY}\x1b[31m")
    logging.getLogger(logs.LOGGER).warning("raw %s", KEY)
    written = log.read_text()
    assert KEY not in written and "\x1b" not in written
    assert written.count("***") >= 3
    if fmt == "json":
        first = json.loads(written.splitlines()[0])
        assert first["error"] == "headers: Authorization: Bearer ***"
