"""Logging for people and for log collectors: stdlib logging, text or JSON lines.

One greppable line per event (`task succeeded id=...`). Every handler carries
a filter that masks the API key wherever it might appear, so even a message
that quotes a header or an environment dump cannot leak it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.config.redact import clean

LOGGER = "imgedit"


class Redact(logging.Filter):
    """Masks each secret, and anything shaped like a bearer token, in the final message
    and the event's fields, and strips control characters: the same rule as everything
    we store (config/redact.py), without its length cut, since a log line may be long."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def _clean(self, text: str) -> str:
        return clean(text, self.secrets, limit=None)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.getMessage())
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: self._clean(v) if isinstance(v, str) else v
                             for k, v in fields.items()}
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        event.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            event["error"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def configure(*, verbose: int = 0, log_file: Path | None = None, fmt: str = "text",
              secrets: Iterable[str] = ()) -> None:
    """stderr gets warnings (info with -v, debug with -vv); a log file gets info and up."""
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.propagate = False
    redact = Redact(secrets)
    formatter: logging.Formatter = JsonLines() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1
                     else logging.DEBUG)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
        handlers.append(to_file)
    for handler in handlers:
        handler.addFilter(redact)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(min(h.level for h in handlers))


def event(level: int, message: str, **fields: Any) -> None:
    """Log `message key=value ...`; JSON output gets the fields as keys."""
    logger = logging.getLogger(LOGGER)
    if not logger.isEnabledFor(level):
        return
    text = " ".join([message, *(f"{k}={v}" for k, v in fields.items() if v is not None)])
    logger.log(level, text, extra={"fields": {"event": message, **fields}})
