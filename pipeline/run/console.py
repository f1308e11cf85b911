"""What `imgedit run` and `imgedit validate` print around a run.

Owns the command line's words: warnings on stderr (not with --quiet), the plan or
the summary (text, or JSON with --json), nothing at all for a quiet good night,
and what to do after an aborted run. It gets plain data from runner.run and never
runs anything; the library (pipeline.api) gets the same data and prints nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.errors import RunAborted
from pipeline.gateway.classify import codes
from pipeline.views import summary
from pipeline.views.logs import event


def show_plan(planned: dict[str, Any], *, as_json: bool, quiet: bool,
              out: Callable[[str], None]) -> None:
    """validate / --dry-run: the plan as a line, or as JSON."""
    warn(planned["warnings"], quiet=quiet)
    out(json.dumps(planned, ensure_ascii=False, indent=2) if as_json
        else summary.plan_text(planned))


def show_summary(result: dict[str, Any], code: int, fatal: Exception | None, *,
                 as_json: bool, quiet: bool, out: Callable[[str], None]) -> None:
    """A run's end: the summary (on stderr with --quiet, and not at all when all is well)."""
    warn(result["warnings"], quiet=quiet)
    if as_json:
        out(json.dumps(result, ensure_ascii=False, indent=2))
    elif not (quiet and code == 0):  # a quiet good night: nothing for cron to mail
        print(summary.text(result), file=sys.stderr if quiet else sys.stdout)
    if code == RunAborted.exit_code:
        print(abort_advice(fatal), file=sys.stderr)


def warn(warnings: Iterable[str], *, quiet: bool) -> None:
    for warning in warnings:
        event(logging.INFO, "manifest warning", warning=warning)  # a log file keeps it
        if not quiet:
            print(f"warning: {warning}", file=sys.stderr)


def abort_advice(exc: Exception | None) -> str:
    status = getattr(exc, "status", None)
    found = codes(exc) if exc is not None else set()
    if "insufficient_user_quota" in found:
        advice = "top up your quota at the gateway, then run again"
    elif "insufficient_quota" in found:
        # Passed through from the gateway's upstream: the quota may be the operator's.
        advice = ("top up the account's quota; if yours has some left, the gateway's own "
                  "upstream account ran out: tell its operator")
    elif "model_not_found" in found:
        advice = "pick a model this gateway offers (set `model:` in the manifest)"
    elif status in (401, 403):
        # The relay passes its upstream's 401 through with the upstream's body: the key
        # at fault may be the gateway's own, not the user's.
        advice = ("check the API key in the provider's environment variable; if it is "
                  "right, the gateway's own upstream key was refused: tell its operator")
    elif "api_not_implemented" in found or status == 501:
        advice = "this gateway does not offer that route: set `route:` for the model"
    else:
        advice = "fix the cause above, then run again"
    return f"run aborted: {exc}\nwhat to do: {advice}; finished work is kept and will be skipped."
