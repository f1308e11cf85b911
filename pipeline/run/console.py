"""What `imgedit run` and `imgedit validate` print, and the exit code they return.

Owns the command line's words around a run: warnings on stderr (not with --quiet),
the plan or the summary (text, or JSON with --json), nothing at all for a quiet good
night, and what to do after an aborted run. The run itself is runner.py's; the
library (pipeline.api) gets the same summary as data and prints nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable

from pipeline.errors import RunAborted
from pipeline.run import runner
from pipeline.run.runner import RunOptions
from pipeline.views import summary
from pipeline.views.logs import event


def run(options: RunOptions, out: Callable[[str], None]) -> int:
    """The command line's run and validate: print what happened, return the exit code."""
    if options.dry_run:
        planned = runner.check(options).summary()
        _warn(planned["warnings"], options)
        out(json.dumps(planned, ensure_ascii=False, indent=2) if options.json
            else summary.plan_text(planned))
        return runner.EXIT_OK
    outcome = runner.execute(options)
    result = outcome.summary
    _warn(result["warnings"], options)
    if options.json:
        out(json.dumps(result, ensure_ascii=False, indent=2))
    elif not (options.quiet and outcome.code == runner.EXIT_OK):  # a quiet good night: no mail
        print(summary.text(result), file=sys.stderr if options.quiet else sys.stdout)
    if outcome.code == RunAborted.exit_code:
        print(abort_advice(outcome.fatal), file=sys.stderr)
    return outcome.code


def _warn(warnings: Iterable[str], options: RunOptions) -> None:
    for warning in warnings:
        event(logging.INFO, "manifest warning", warning=warning)  # a log file keeps it
        if not options.quiet:
            print(f"warning: {warning}", file=sys.stderr)


def abort_advice(exc: Exception | None) -> str:
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None) or getattr(exc, "type", None)
    if code in ("insufficient_quota", "insufficient_user_quota"):
        advice = "top up the account's quota, then run again"
    elif code == "model_not_found":
        advice = "pick a model this gateway offers (set `model:` in the manifest)"
    elif status in (401, 403):
        advice = "check the API key in the provider's environment variable"
    else:
        advice = "fix the cause above, then run again"
    return f"run aborted: {exc}\nwhat to do: {advice}; finished work is kept and will be skipped."
