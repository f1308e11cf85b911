"""How a task that ended without a usable answer goes into the ledger and the run's counts.

Owns one rule: a task whose last attempt may have been billed with no answer (a read
timeout, a dropped connection, 504/524) is `unknown`; any other is `failed`, terminal or
not as the caller decided. And the short label of an error's cause, for the ledger and
the retry counts; and an error stripped of its frames, to be kept for later attempts.
It never decides a verdict (gateway/classify.py does) and never sends.
"""

from __future__ import annotations

from pipeline.errors import RequestError, StatusError
from pipeline.gateway.classify import Verdict, classify
from pipeline.ledger.store import Ledger
from pipeline.task import Task
from pipeline.views.tally import Tally


def cause(exc: BaseException | None) -> str:
    if isinstance(exc, StatusError):
        return exc.code or exc.type or f"http_{exc.status}"
    return getattr(exc, "kind", type(exc).__name__)


def mark(ledger: Ledger, tally: Tally, task: Task, fingerprint: str,
         last: RequestError | None, reason: str, *, terminal: bool) -> None:
    """Record the task's end: `unknown` when `last` may have been billed with no answer,
    else `failed` (a task never sent, `last` None, failed because its model stopped)."""
    if last is not None and classify(last) is Verdict.UNKNOWN:
        ledger.mark_unknown(task.id, fingerprint, reason=reason)
        tally.unknown += 1
    else:
        ledger.mark_failed(task.id, fingerprint, terminal=terminal, reason=reason,
                           error_type=cause(last) if last else "model_stopped",
                           error_code=getattr(last, "code", None))
        tally.failed += 1
    tally.failure(task.id, reason)


def without_frames(exc: RequestError) -> RequestError:
    """The error, kept for the task's next attempts without the frames it was raised
    through: they hold the answer's body (up to max_answer_mb) until the task ends."""
    seen: BaseException | None = exc
    while seen is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return exc

